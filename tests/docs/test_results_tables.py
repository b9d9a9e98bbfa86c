"""Docs quote benchmarks cell for cell: docs/benchmarks.md, every doc with a results marker, the README's demo table.
The checker's own tests show it fails when one figure of a copy of docs/benchmarks.md is edited."""

from __future__ import annotations

import shlex
import shutil

from tests.conftest import REPO
from tests.docs.results_tables import check, tables

BENCHMARKS = REPO / "docs" / "benchmarks.md"


def test_docs_benchmarks_tables_equal_their_results_files():
    assert check(BENCHMARKS, REPO, every_table=True) == []
    assert any(t.results for t in tables(BENCHMARKS.read_text())), "docs/benchmarks.md quotes no results file"


def test_every_doc_that_cites_a_results_file_quotes_it_exactly():
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert check(doc, REPO, every_table=False) == [], doc.name


def test_readme_demo_table_cites_its_results_or_says_why_not():
    """The README's demo table must name benchmarks/results/demo.json (written by `make demo`) or say why it has none."""
    assert check(REPO / "README.md", REPO, every_table=True) == []
    assert tables((REPO / "README.md").read_text()), "the README has no demo table"


def _copy(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copy(BENCHMARKS, tmp_path / "docs" / "benchmarks.md")
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    return tmp_path / "docs" / "benchmarks.md"


def test_checker_fails_when_one_figure_is_edited(tmp_path):
    doc = _copy(tmp_path)
    assert check(doc, tmp_path, every_table=True) == []
    quoted = next(t for t in tables(doc.read_text()) if t.results)
    lines = doc.read_text().splitlines()
    row = lines[quoted.line + 1]  # the first data row (after the header and the separator)
    cell = quoted.rows[1][-1]
    edited = cell[:-1] + ("1" if cell[-1] != "1" else "2")
    lines[quoted.line + 1] = row[: row.rindex(cell)] + edited + row[row.rindex(cell) + len(cell) :]
    doc.write_text("\n".join(lines) + "\n")
    [problem] = check(doc, tmp_path, every_table=True)
    assert problem.startswith(f"docs/benchmarks.md:{quoted.line}: row 1 is ") and edited in problem
    assert f"{quoted.results} table {quoted.table!r} says" in problem and cell in problem


def test_checker_fails_on_a_measured_table_that_cites_nothing(tmp_path):
    doc = _copy(tmp_path)
    text = doc.read_text()
    marker = next(line for line in text.splitlines() if line.startswith("<!-- results:"))
    doc.write_text(text.replace(marker + "\n", "", 1))
    [problem] = check(doc, tmp_path, every_table=True)
    assert "a table with no results file" in problem


def test_checker_says_clearly_when_the_demo_results_file_is_missing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# demo\n\n<!-- results: benchmarks/results/demo.json table: eval -->\n\n| metric | base | tuned |\n|---|---:|---:|\n"
        "| eval loss | 3.73 | 2.90 |\n"
    )
    [problem] = check(readme, tmp_path, every_table=True)
    assert problem.startswith("README.md:5: cites benchmarks/results/demo.json, which does not exist")
    assert "`make demo`" in problem
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    demo = '{"tables": {"eval": {"header": ["metric", "base", "tuned"], "rows": [["eval loss", "3.73", "2.91"]]}}}'
    (tmp_path / "benchmarks" / "results" / "demo.json").write_text(demo)
    [problem] = check(readme, tmp_path, every_table=True)
    assert "row 1 is ['eval loss', '3.73', '2.90']" in problem and "'2.91'" in problem


def test_results_files_name_no_path_outside_the_repository(tmp_path):
    """A results file's command keeps paths inside the repository and cuts others (a scratch log) to their name."""
    import json

    from benchmarks.results import write_results

    inside = REPO / "benchmarks" / "results" / "x.json"
    out = write_results(
        "probe",
        runs=[],
        summary={},
        command=f"python -m benchmarks.suite_time --output /scratch/logs/run.log --log={tmp_path}/a.log --in {inside}",
        directory=tmp_path,
    )
    assert json.loads(out.read_text())["command"] == (
        f"python -m benchmarks.suite_time --output run.log --log=a.log --in {inside}"
    )
    commands = {p.name: json.loads(p.read_text())["command"] for p in (REPO / "benchmarks" / "results").glob("*.json")}
    absolute = {name: c for name, c in commands.items() if any(arg.startswith("/") for arg in shlex.split(c))}
    assert not absolute, f"committed results files whose command names a path of one machine: {absolute}"
