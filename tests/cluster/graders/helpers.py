"""Building graders from plain dicts, as a spec does."""

from __future__ import annotations

from pydantic import TypeAdapter

from cluster.graders.grading import GRADERS, Grader
from cluster.graders.template import make_sample

ADAPTER = TypeAdapter(Grader)


def grader(**fields):
    """A validated grader (its problems() must be empty) from keyword fields."""
    g = ADAPTER.validate_python({"name": fields.pop("name", "g"), **fields})
    assert g.problems() == [], g.problems()
    return g


def score(g, output_text: str, item: dict | None = None) -> float:
    """One grader's score of one answer."""
    scorer = GRADERS[g.type].scorer(g)
    try:
        return scorer(make_sample(output_text), item or {})
    finally:
        getattr(scorer, "close", lambda: None)()
