"""Objectives: SFT, DPO, KTO and GRPO, one module each, chosen once from `train.objective` (registry.py).

    from cluster.objectives import recipe_for
    recipe_for(spec).prepare(spec, tokenizer, cache_dir)   # and .check, .trainer, .memory, .evaluate (recipe.py)

A new objective is one module here that ends with `RECIPE = Recipe(...)`, one line in registry.py, and its name in
`cluster.spec.objective.Objective` (with a settings section when it has settings).
"""

from cluster.objectives.recipe import PlanTerms, Recipe
from cluster.objectives.registry import RECIPES, recipe, recipe_for

__all__ = ["RECIPES", "PlanTerms", "Recipe", "recipe", "recipe_for"]
