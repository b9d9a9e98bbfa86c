"""What every spec section shares: unknown keys are errors, and rules report problems, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from cluster.errors import UserError


class Section(BaseModel):
    """A spec section: forbids unknown keys; `problems()` lists the cross-field rules it breaks."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def problems(self) -> list[Problem]:
        """Cross-field rules of this section; paths are relative to it."""
        return []


def dotted(path) -> str:
    """A field path as users read it: keys joined by dots, an empty key written '' (so it is never blank)."""
    return ".".join(str(x) if x != "" else "''" for x in path)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (a dotted field path), what, and the fix."""

    field: str
    problem: str
    fix: str = ""
    line: int | None = None

    def within(self, prefix: str) -> Problem:
        """The same problem with its field path under `prefix`."""
        return Problem(f"{prefix}.{self.field}" if self.field else prefix, self.problem, self.fix, self.line)

    def __str__(self) -> str:
        where = f"{self.field} (line {self.line})" if self.line else self.field
        return f"{where}: {self.problem}" + (f" Fix: {self.fix}" if self.fix else "")


class SpecDeprecation(FutureWarning):
    """A spelling a spec may still use but should not: the message names the new one. Shown as `rayfit: warning:`
    by the command line (cluster.errors.run_main)."""


class SpecError(UserError):
    """Every problem found in a spec, raised once; not a ValueError so pydantic does not wrap it."""

    exit_code = 2

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems, self.source = problems, source
        head = f"{source}: " if source else ""
        if len(problems) == 1:  # one line, so a log or a terminal shows it whole
            super().__init__(f"{head}{problems[0]}")
        else:
            super().__init__(f"{head}{len(problems)} problems in the spec:\n" + "\n".join(f"  - {p}" for p in problems))

    def cli_message(self) -> str:
        """The problems, one per line, under the spec's name."""
        return str(self)
