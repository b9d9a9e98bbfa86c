"""The docs-vs-results checker: every table that quotes a benchmark equals its results file, cell for cell.

A quoted table is preceded by `<!-- results: benchmarks/results/<name>.json table: <t> -->` (benchmarks/results.py
writes the file). In a doc where every table must be accounted for (docs/benchmarks.md, the README's demo table) a
table without that marker needs `<!-- no results: REASON -->` instead, saying plainly why it has no results file
(not re-measured, quoted from elsewhere, what tests assert). `check` returns every problem, with file and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

RESULTS = re.compile(r"^<!--\s*results:\s*(\S+)\s+table:\s*(\S+)\s*-->\s*$")
NO_RESULTS = re.compile(r"^<!--\s*no results:\s*(.+?)\s*-->\s*$")


@dataclass
class DocTable:
    """One Markdown table in a doc, and what its marker says about it."""

    line: int  # 1-based line of the table's header row
    rows: list[list[str]]  # the header first, the separator row left out
    results: str | None = None  # the results file the marker names, relative to the repository
    table: str | None = None  # the table in that file
    exempt: str | None = None  # the reason a `no results` marker gives


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _separator(cells: list[str]) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def tables(text: str) -> list[DocTable]:
    """Every table in `text`, each with the marker on the nearest non-blank line above it (if any)."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        if not (lines[i].lstrip().startswith("|") and i + 1 < len(lines) and _separator(_cells(lines[i + 1]))):
            i += 1
            continue
        start, rows = i, [_cells(lines[i])]
        i += 2
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            rows.append(_cells(lines[i]))
            i += 1
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        doc = DocTable(line=start + 1, rows=rows)
        if m := RESULTS.match(above):
            doc.results, doc.table = m.group(1), m.group(2)
        elif m := NO_RESULTS.match(above):
            doc.exempt = m.group(1)
        found.append(doc)
    return found


def check(doc: Path, repo: Path, *, every_table: bool) -> list[str]:
    """Problems in `doc`: a quoted table that differs from its results file or names a missing one, and (with
    `every_table`) a table that has neither marker."""
    problems = []
    name = doc.name if doc.parent == repo else str(doc.relative_to(repo)) if doc.is_relative_to(repo) else str(doc)
    for t in tables(doc.read_text(encoding="utf-8")):
        where = f"{name}:{t.line}"
        if t.results is None:
            if every_table and t.exempt is None:
                problems.append(
                    f"{where}: a table with no results file. Fix: precede it with "
                    "`<!-- results: benchmarks/results/<name>.json table: <t> -->` written by a benchmarks/ script, "
                    "or `<!-- no results: why -->` and say so in the text"
                )
            continue
        problems += _compare(t, repo, where)
    return problems


def _compare(t: DocTable, repo: Path, where: str) -> list[str]:
    path = repo / t.results
    if not path.is_file():
        return [
            f"{where}: cites {t.results}, which does not exist. Fix: run the benchmark (or `make demo` for "
            "benchmarks/results/demo.json) and commit the file it writes; never write one by hand"
        ]
    quoted = json.loads(path.read_text(encoding="utf-8")).get("tables", {}).get(t.table)
    if quoted is None:
        return [f"{where}: {t.results} has no table {t.table!r}. Fix: cite one of its tables or re-run the benchmark"]
    expected = [quoted["header"], *quoted["rows"]]
    if len(expected) != len(t.rows):
        return [f"{where}: {len(t.rows) - 1} rows, but {t.results} table {t.table!r} has {len(expected) - 1}"]
    problems = []
    for r, (got, want) in enumerate(zip(t.rows, expected, strict=True)):
        if [_plain(c) for c in got] != [_plain(c) for c in want]:
            row = "header" if r == 0 else f"row {r}"
            problems.append(f"{where}: {row} is {got}, but {t.results} table {t.table!r} says {want}")
    return problems


def _plain(cell: str) -> str:
    """A cell as compared: Markdown emphasis and code marks do not change a figure."""
    return re.sub(r"[*`]", "", cell).strip()
