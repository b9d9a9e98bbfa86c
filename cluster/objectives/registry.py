"""The one place `train.objective` picks its recipe: one line per objective.

Modules are imported on first use, so the planner or the spec never pull in TRL through a recipe they do not run.
"""

from __future__ import annotations

import importlib

from cluster.objectives.recipe import Recipe

RECIPES = {
    "sft": "cluster.objectives.sft",
    "dpo": "cluster.objectives.dpo",
    "kto": "cluster.objectives.kto",
    "grpo": "cluster.objectives.grpo",
}


def recipe(objective: str) -> Recipe:
    """The recipe of `objective` (a `train.objective` value; the spec only allows the names above)."""
    return importlib.import_module(RECIPES[objective]).RECIPE


def recipe_for(spec) -> Recipe:
    """The recipe of a spec's `train.objective`."""
    return recipe(spec.train.objective)
