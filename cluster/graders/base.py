"""What every grader shares: a name, a pass threshold, and templates checked when the spec is validated."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from cluster.graders.template import FIX, item_fields, template_error
from cluster.spec.base import Problem, Section


class GraderError(Exception):
    """A grader could not score one sample (it raised, hung, or its answer was unusable); the message says why."""


class GraderBase(Section):
    """Fields every grader has; subclasses list their template fields in TEMPLATES."""

    TEMPLATES: ClassVar[tuple[str, ...]] = ()

    name: str = Field(min_length=1, description="The grader's name; its mean is reported as reward_<name>.")
    pass_threshold: float | None = Field(
        None, description="A sample passes when its score is at least this (default: the top of the grader's range)."
    )

    def templates(self) -> dict[str, str]:
        """Each template field's path (relative to the grader) and its text."""
        return {f: getattr(self, f) for f in self.TEMPLATES}

    def item_fields(self) -> set[str]:
        """The data-row fields this grader's templates read."""
        return {f for text in self.templates().values() for f in item_fields(text)}

    def threshold(self) -> float:
        """The score at or above which a sample passes."""
        return 1.0 if self.pass_threshold is None else self.pass_threshold

    def problems(self) -> list[Problem]:
        out = []
        for field, text in self.templates().items():
            why = template_error(text)
            if why:
                out.append(Problem(field, f"template {why}", FIX))
        return out
