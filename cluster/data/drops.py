"""Why a row was dropped, and where it was: the unit every data problem is reported in."""

from __future__ import annotations

from dataclasses import dataclass

# Every reason a row can be dropped, in the order the report lists them.
REASONS = (
    "unparseable",
    "not utf-8",
    "missing field",
    "unknown role",
    "empty content",
    "wrong role order",
    "no assistant turn",
    "duplicate",
    "near duplicate",
    "contamination",
    "template error",
    "too short",
    "too long",
)


@dataclass(frozen=True)
class Drop:
    """One dropped row: the reason (one of REASONS), `file:line`, and a detail saying what exactly is wrong."""

    reason: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


class RowProblem(Exception):
    """Raised while converting one record; turned into a Drop by the caller."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason, self.detail = reason, detail
