"""Hostile spec files (tests/cluster/spec_corpus/): each one is refused by `rayfit validate` in one line, exit 2.

Set RAYFIT_HOSTILE_SPECS=/path/to/folder to run a corpus of your own the same way (every file must be refused).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main as rayfit

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "spec_corpus"
# File -> what its one line must name (field, line or the reason).
EXPECTED = {
    "alias_bomb.yaml": "(line 5): the document holds more than 10,000 values once its 28 aliases",
    "bad_date.yaml": "(line 9): a value cannot be read: the value '2024-13-45'",
    "deep_mapping.yaml": "(line 65): values are nested more than 64 levels deep",
    "deep_nesting.yaml": "(line 2): values are nested more than 64 levels deep",
    "duplicate_key.yaml": "model.base (line 3): key 'base' is given twice, on lines 2 and 3",
    "duplicate_section.yaml": "model (line 8): key 'model' is given twice, on lines 1 and 8",
    "empty.yaml": "got nothing (an empty document)",
    "huge_int.yaml": "(line 9): a value cannot be read",
    "latin1.yaml": "byte 67 (line 3) is not UTF-8",
    "not_a_mapping.yaml": "expected a mapping of keys, got a list",
    "nul_byte.yaml": "character '\\x00' (position 16) is not allowed",
    "python_tag.yaml": "(line 1): a value cannot be read: could not determine a constructor for the tag",
    "recursive_alias.yaml": "(line 3): alias *m refers to a value that contains it",
    "tab_indent.yaml": "(line 2): not valid YAML",
    "two_documents.yaml": "(line 8): not valid YAML: expected a single document",
    "unclosed_quote.yaml": "(line 3): not valid YAML",
    "undefined_alias.yaml": "(line 2): not valid YAML: found undefined alias 'nowhere'",
    "utf16.yaml": "byte 0 (line 1) is not UTF-8",
    "wide_list.yaml": "(line 6): the document holds more than 10,000 values.",
}


def refused_in_one_line(path: Path, capsys) -> str:
    """Run `rayfit validate PATH` in this process; any exception but the CLI's own exit fails the test with its traceback."""
    code = rayfit(["validate", str(path)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and "Fix: " in lines[0], err
    return lines[0]


def test_every_corpus_file_has_an_expectation():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_spec_is_one_line_with_exit_2(name, capsys):
    line = refused_in_one_line(CORPUS / name, capsys)
    assert EXPECTED[name] in line, line


def test_files_too_big_or_unreadable_are_refused(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("model:\n  chat_template: '" + "x" * (2 << 20) + "'\n")
    assert "larger than 1024 KiB" in refused_in_one_line(big, capsys)
    assert "is not a regular file" in refused_in_one_line(tmp_path, capsys)
    assert "cannot be read (Input/output error)" in refused_in_one_line(Path("/proc/self/mem"), capsys)


def test_a_spec_reusing_an_alias_a_few_times_is_fine(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "model:\n  base: embedded:smollm2-135m-instruct\ndata:\n  train: [&faq {path: embedded:construction-faq}]\n"
        "  eval: [*faq, *faq]\noutput:\n  name: demo\n"
    )
    assert rayfit(["validate", str(ok)]) == 0


@pytest.mark.skipif(not os.environ.get("RAYFIT_HOSTILE_SPECS"), reason="set RAYFIT_HOSTILE_SPECS to a folder of hostile specs")
def test_maintainers_corpus(capsys):
    folder = Path(os.environ["RAYFIT_HOSTILE_SPECS"])
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        refused_in_one_line(path, capsys)


# The real console command, in a fresh process: exit code, one line on stderr, no traceback, and memory.
PROBE = """
import resource, sys, tracemalloc
from jobs.cli import build_parser, main
build_parser()  # imports every subcommand's modules before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
code = main(["validate", sys.argv[1]])
peak = tracemalloc.get_traced_memory()[1]
print(code, peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("name", ["alias_bomb.yaml", "deep_nesting.yaml"])
def test_cli_process_refuses_with_small_memory(name):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(CORPUS / name)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env=env,
        timeout=120,
    )
    code, peak, rss_growth_kib = (int(x) for x in r.stdout.split())
    assert code == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert EXPECTED[name] in r.stderr
    # The 324-byte bomb expands to 387 million values (the old loader died with MemoryError at 4 GB). Refused from its
    # event stream, it was measured at 0.12 MiB of Python allocations (deep_nesting: 0.85 MiB) and no RSS growth.
    assert peak < 2 << 20, f"peak Python allocation {peak / 2**20:.2f} MiB"
    assert rss_growth_kib < 8 << 10, f"resident set grew by {rss_growth_kib / 1024:.1f} MiB"
