"""One recipe per objective, chosen once: the registry covers every objective the spec allows, and no other module
of cluster/ branches on the objective's name."""

from __future__ import annotations

import re
import typing

from cluster.objectives import RECIPES, Recipe, recipe, recipe_for
from cluster.spec import validate_spec
from cluster.spec.objective import Objective
from tests.conftest import REPO

# The spec states its own rules per objective (cluster/spec); the service's request translation is owned elsewhere
# and still names dpo for OpenAI's method.dpo.beta (cluster/service/job_request.py).
ALLOWED = ("cluster/objectives/", "cluster/spec/", "cluster/service/")
BRANCH = re.compile(r"""objective\s*(==|!=|in)\s*[("'\[]""")


def test_every_objective_the_spec_allows_has_its_recipe():
    assert set(typing.get_args(Objective)) == set(RECIPES) == {"sft", "dpo", "kto", "grpo"}
    for name in RECIPES:
        r = recipe(name)
        assert isinstance(r, Recipe) and r.name == name
        assert all(callable(f) for f in (r.prepare, r.check, r.trainer, r.plan_terms, r.evaluate, r.actors, r.manifest_fields))


def test_the_spec_picks_the_recipe():
    spec = {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": "x.jsonl"}]},
        "output": {"name": "r"},
    }
    assert recipe_for(validate_spec(spec)).name == "sft"
    dpo = {**spec, "train": {"objective": "dpo"}}
    assert recipe_for(validate_spec(dpo)).name == "dpo"


def test_no_module_outside_the_recipes_branches_on_the_objective():
    offenders = []
    for path in sorted((REPO / "cluster").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
