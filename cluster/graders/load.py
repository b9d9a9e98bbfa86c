"""Graders from a file: a job spec (its train.grpo graders and weights), one grader, or a list of graders."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cluster.graders.grading import Grader
from cluster.spec.base import Problem, Section, SpecError


class GraderFile(Section):
    """A file of graders alone, in OpenAI's shapes."""

    graders: list[Grader] = Field(min_length=1, description="The graders.")

    def problems(self) -> list[Problem]:
        return [p.within(f"graders.{i}") for i, g in enumerate(self.graders) for p in g.problems()]


def load_graders(path: str | Path) -> tuple[list, list[float] | None]:
    """The graders and weights in `path`; a SpecError names every problem, with its line."""
    from cluster.spec.load import validate_model, validate_spec
    from cluster.spec.reader import read_yaml_file

    doc = read_yaml_file(path, "grader")
    data = doc.data
    if isinstance(data, dict) and "train" in data:
        grpo = validate_spec(data, source=str(path), lines=doc.lines).train.grpo
        if not grpo.graders:
            raise SpecError([Problem("train.grpo.graders", "the spec has no graders.", "add graders.")], str(path))
        return grpo.graders, grpo.weights
    wrapped = {"graders": data if isinstance(data, list) else [data]}
    lines = {("graders", *key) if isinstance(data, list) else ("graders", "0", *key): n for key, n in doc.lines.items()}
    return validate_model(GraderFile, wrapped, str(path), lines).graders, None
