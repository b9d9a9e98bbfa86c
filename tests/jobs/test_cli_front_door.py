"""One front door: `rayfit --help` lists every command, the run/merge/evaluate/ask/serve commands have --help with an
example, and every `rayfit ...` command that a message in the source suggests exists and answers --help."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys

import pytest

from jobs.cli import build_parser, main
from tests.conftest import REPO

FRONT_DOOR = {"finetune", "merge", "evaluate", "ask", "serve", "validate", "data", "plan", "submit", "status", "logs", "list"}
# "rayfit X [Y]" in a string of the source: a command suggested to a user (`rayfit merge RUN`, "Fix: run rayfit data
# check SPEC") or prose ("a rayfit checkpoint"). In backticks it must be a command; bare, X must be a command or one
# of these nouns and verbs, so a Fix message that names a command that does not exist fails either way.
SUGGESTED = re.compile(r"(`?)\brayfit ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")
PROSE = {"adds", "checkpoint", "does", "export", "fine-tuning", "job", "knows", "manifest", "never", "reads", "run"}
PROSE |= {"has", "reports", "service", "spec", "touches", "user", "uses", "version", "wrote"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _strings(path) -> list[str]:
    """Every string constant in a Python file: messages, f-string parts, help texts, docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def suggested_commands() -> set[tuple[str, ...]]:
    """Every `rayfit X [Y]` in the strings of cluster/, jobs/ and serve/ that is not prose (Y kept when it is a
    subcommand of X)."""
    commands = _subcommands(build_parser())
    found = set()
    for path in [p for package in ("cluster", "jobs", "serve") for p in (REPO / package).rglob("*.py")]:
        for text in _strings(path):
            for tick, first, second in SUGGESTED.findall(text):
                if not tick and first not in commands and first in PROSE:
                    continue
                words = (first,)
                if first in commands and second in _subcommands(commands[first]):
                    words = (first, second)
                found.add(words)
    return found


def _help(words: tuple[str, ...], capfd) -> tuple[int, str]:
    try:
        code = main([*words, "--help"])
    except SystemExit as e:
        code = e.code
    return code, capfd.readouterr().out


def test_rayfit_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = set(re.findall(r"^    ([a-z][a-z-]*) ", proc.stdout, flags=re.M))
    registered = set(_subcommands(build_parser()))
    assert FRONT_DOOR <= registered, f"missing commands: {FRONT_DOOR - registered}"
    assert listed == registered, proc.stdout


def test_every_suggested_rayfit_command_exists_and_answers_help(capfd):
    found = suggested_commands()
    # the scan sees the Fix messages it is meant to check, backticked or not (cluster/graders/grading.py has none)
    assert {("merge",), ("data", "check"), ("graders", "run"), ("list",)} <= found
    commands = _subcommands(build_parser())
    missing = sorted(" ".join(w) for w in found if w[0] not in commands)
    assert not missing, f"messages suggest commands that do not exist: {missing}"
    for words in sorted(found):
        code, out = _help(words, capfd)
        assert code == 0 and "usage:" in out, (words, out)


@pytest.mark.parametrize("command", ["finetune", "merge", "evaluate", "ask", "serve"])
def test_front_door_commands_have_help_with_an_example(command, capfd):
    code, out = _help((command,), capfd)
    assert code == 0 and "example:" in out and f"rayfit {command} " in out, out


def test_rayfit_and_python_m_share_one_parser_for_each_job():
    """`rayfit finetune|merge|evaluate` parse exactly what `python -m jobs.X` parses, and run the same function."""
    from jobs import evaluate, finetune, merge

    commands = _subcommands(build_parser())
    for name, job in (("finetune", finetune), ("merge", merge), ("evaluate", evaluate)):
        alias = argparse.ArgumentParser()
        job.add_arguments(alias)
        options = {a.dest for a in alias._actions} - {"help"}
        assert options == {a.dest for a in commands[name]._actions} - {"help"}, name
        assert commands[name].get_default("run") is job.run


def test_unknown_arguments_are_refused_outside_forwarding_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", "jobs/specs/demo-cpu.yaml", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
