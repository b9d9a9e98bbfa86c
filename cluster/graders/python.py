"""`python`: OpenAI's `source` defining grade(sample, item) -> float, or rayfit's `function: module:function`.

The code runs in its own process (python_process.py) with a timeout per call, so a grader that hangs or
crashes costs one sample's score and a named error, never the training process.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase
from cluster.graders.python_process import GraderProcess
from cluster.spec.base import Problem

SWITCH = "RAYFIT_PYTHON_GRADERS"  # a service sets it to "off" to refuse user code
FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def switched_off() -> bool:
    """Whether this service refuses python graders."""
    return os.environ.get(SWITCH, "on").strip().lower() in ("off", "0", "false", "no")


class Grader(GraderBase):
    """OpenAI's PythonGrader; scores are whatever grade() returns (a finite number)."""

    type: Literal["python"] = Field(description="Always python.")
    source: str | None = Field(None, description="Python source that defines grade(sample, item) -> float (OpenAI's).")
    function: str | None = Field(
        None, description="Instead of source: module:function importable from the job's working directory."
    )
    image_tag: str | None = Field(None, description="OpenAI's sandbox image; accepted for compatibility and not used.")
    timeout_s: float = Field(10.0, gt=0, description="Longest one call may take; a slower call scores 0 and is named.")

    def problems(self) -> list[Problem]:
        out = super().problems()
        if switched_off():
            out.append(
                Problem(
                    "type",
                    f"python graders are switched off on this service ({SWITCH}=off).",
                    "use string_check, text_similarity, regex, json_schema or score_model graders.",
                )
            )
        if (self.source is None) == (self.function is None):
            out.append(Problem("source", "give exactly one of source and function.", "keep source or function."))
        elif self.function is not None and not FUNCTION.match(self.function):
            out.append(Problem("function", f"'{self.function}' is not module:function.", "write e.g. my_rewards:grade."))
        elif self.source is not None:
            out += _source_problems(self.source)
        return out


def _source_problems(source: str) -> list[Problem]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [Problem("source", f"is not valid Python (line {e.lineno}: {e.msg}).", "fix the source.")]
    if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
        return [Problem("source", "defines no top-level function grade(sample, item).", "add def grade(sample, item): ...")]
    return []


def scorer(grader: Grader) -> GraderProcess:
    """The grader as a callable (sample, item) -> float running in its own process; close() stops it."""
    return GraderProcess(grader.source, grader.function, grader.timeout_s)
