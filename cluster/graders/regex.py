"""`regex` (rayfit's): 1.0 when the answer fully matches a pattern; the one home of the full-match rule.

evaluate.format_regex uses the same rule (cluster/evaluation/scoring.py), so a reward and a reported
compliance rate agree.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase
from cluster.graders.template import render
from cluster.spec.base import Problem


def full_match(pattern: str, text: str) -> bool:
    """Whether the whole text, surrounding whitespace aside, matches; `.` also matches newlines."""
    return re.fullmatch(pattern, text.strip(), flags=re.DOTALL) is not None


def pattern_problem(field: str, pattern: str) -> Problem | None:
    """A problem naming `field` when `pattern` is not a valid Python regular expression."""
    try:
        re.compile(pattern)
    except re.error as e:
        return Problem(field, f"not a valid regular expression ({e}).", "fix the pattern (Python re syntax).")
    return None


class Grader(GraderBase):
    """1.0 when the rendered input fully matches `pattern`, else 0.0."""

    TEMPLATES = ("input",)

    type: Literal["regex"] = Field(description="Always regex.")
    input: str = Field("{{sample.output_text}}", description="The text matched.")
    pattern: str = Field(description="Python regular expression the whole answer must match (re.DOTALL).")

    def problems(self):
        bad = pattern_problem("pattern", self.pattern)
        return super().problems() + ([bad] if bad else [])


def scorer(grader: Grader):
    """The grader as a function of (sample, item)."""
    return lambda sample, item: float(full_match(grader.pattern, render(grader.input, sample, item)))
