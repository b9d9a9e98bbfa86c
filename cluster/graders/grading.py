"""Scoring answers with a list of graders: weighted reward, per-grader scores, pass, and failures counted and named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Union

from pydantic import Field

from cluster.errors import UserError
from cluster.graders import multi
from cluster.graders.base import GraderError
from cluster.graders.registry import LEAVES
from cluster.graders.template import TemplateError, make_sample

GRADERS = {**LEAVES, "multi": multi}
Grader = Annotated[Union[tuple(m.Grader for m in GRADERS.values())], Field(discriminator="type")]  # noqa: UP007


class GraderFailures(UserError):
    """Graders failed on more samples than allowed; the message lists the first ones, each with its row."""


@dataclass
class Scored:
    """One answer's scores: the weighted mean reward, each grader's score, and whether every grader passed."""

    reward: float
    scores: dict[str, float]
    passed: bool


@dataclass
class Grading:
    """Live scorers for `graders` (weights normalised to sum 1); stops after `max_failures` failed scores."""

    graders: list
    weights: list[float] | None = None
    max_failures: int = 10
    failures: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.weights = normalised_weights(self.graders, self.weights)
        self._scorers = [GRADERS[g.type].scorer(g) for g in self.graders]

    def score_one(self, index: int, output_text: str, item: dict, where: str) -> float:
        """Grader `index`'s score of one answer; a failure scores 0, is recorded with `where`, and may stop the run."""
        grader = self.graders[index]
        try:
            return float(self._scorers[index](make_sample(output_text), item))
        except (GraderError, TemplateError, ValueError, ArithmeticError) as e:
            self.failures.append(f"grader '{grader.name}' on {where}: {e}")
            if len(self.failures) > self.max_failures:
                raise GraderFailures(self.failure_message()) from None
            return 0.0

    def score(self, output_text: str, item: dict, where: str) -> Scored:
        """Every grader's score of one answer, their weighted mean, and whether each passed its threshold."""
        scores = {g.name: self.score_one(i, output_text, item, where) for i, g in enumerate(self.graders)}
        reward = sum(w * s for w, s in zip(self.weights, scores.values(), strict=True))
        passed = all(scores[g.name] >= g.threshold() for g in self.graders)
        return Scored(reward, scores, passed)

    def failure_message(self) -> str:
        """The message of GraderFailures for this scorer's failures."""
        return failure_message(self.failures, self.max_failures)

    def close(self) -> None:
        """Stop the processes of python graders."""
        for s in self._scorers:
            getattr(s, "close", lambda: None)()

    def __enter__(self) -> Grading:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalised_weights(graders: list, weights: list[float] | None) -> list[float]:
    """One weight per grader, summing to 1 (equal when none are given): the reward is the weighted mean."""
    raw = weights or [1.0] * len(graders)
    return [w / sum(raw) for w in raw]


def failure_message(failures: list[str], allowed: int) -> str:
    """Too many grader failures: how many, the first five with their rows, and the fix."""
    shown = "\n".join(f"  - {f}" for f in failures[:5])
    more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
    return (
        f"{len(failures)} grader failures (more than the {allowed} allowed):\n{shown}{more}\n"
        "Fix: fix the graders named (rayfit graders run SPEC --sample TEXT --item JSON tries one), "
        "or raise train.grpo.max_grader_failures."
    )


def missing_fields(graders: list, rows: list[tuple[str, dict]], shown: int = 5) -> list[str]:
    """For each grader field some rows lack: one line naming the grader, the field and the first rows (file:line)."""
    out = []
    for g in graders:
        for name in sorted(g.item_fields()):
            lacking = [where for where, row in rows if name not in row]
            if lacking:
                more = f" and {len(lacking) - shown} more" if len(lacking) > shown else ""
                out.append(
                    f"grader '{g.name}' reads {{{{item.{name}}}}}, which {len(lacking)} of {len(rows)} rows lack: "
                    f"{', '.join(lacking[:shown])}{more}"
                )
    return out
