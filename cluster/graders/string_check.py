"""`string_check`: compare the rendered input with the reference (eq, ne, like = contains, ilike = contains ignoring case)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase
from cluster.graders.template import render


class Grader(GraderBase):
    """OpenAI's StringCheckGrader: 1.0 when the operation holds, else 0.0."""

    TEMPLATES = ("input", "reference")

    type: Literal["string_check"] = Field(description="Always string_check.")
    input: str = Field(description="The text checked, usually {{sample.output_text}}.")
    reference: str = Field(description="The text compared with, usually {{item.FIELD}}.")
    operation: Literal["eq", "ne", "like", "ilike"] = Field(
        description="eq: equal; ne: not equal; like: input contains reference; ilike: the same, ignoring case."
    )


def scorer(grader: Grader):
    """The grader as a function of (sample, item)."""

    def score(sample: dict, item: dict) -> float:
        text, ref = render(grader.input, sample, item), render(grader.reference, sample, item)
        return float(
            {
                "eq": text == ref,
                "ne": text != ref,
                "like": ref in text,
                "ilike": ref.lower() in text.lower(),
            }[grader.operation]
        )

    return score
