"""Python graders: OpenAI's source and module:function, each call in its own process, bounded and named when it fails."""

from __future__ import annotations

import time

import pytest

from cluster.graders.base import GraderError
from cluster.graders.grading import Grading
from cluster.graders.python_process import GraderProcess
from tests.cluster.graders.helpers import ADAPTER, grader, score

SOURCE = """
def grade(sample, item):
    return 1.0 if sample["output_text"].strip() == item["answer"] else 0.25
"""


def test_source_grade_gets_openai_shaped_sample_and_item():
    g = grader(type="python", source=SOURCE)
    assert score(g, " 42 ", {"answer": "42"}) == 1.0
    assert score(g, "41", {"answer": "42"}) == 0.25


def test_module_function_is_imported_from_the_working_dir(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def length(sample, item):\n    return len(sample['output_text']) / 4\n")
    monkeypatch.chdir(tmp_path)
    assert score(grader(type="python", function="my_rewards:length"), "abc") == 0.75


def test_a_raising_grader_is_named_and_the_process_keeps_serving():
    proc = GraderProcess("def grade(sample, item):\n    return 1 / item['n']\n", None, timeout_s=20)
    try:
        assert proc({"output_text": ""}, {"n": 4}) == 0.25
        with pytest.raises(GraderError, match="raised ZeroDivisionError: division by zero"):
            proc({"output_text": ""}, {"n": 0})
        assert proc({"output_text": ""}, {"n": 2}) == 0.5
    finally:
        proc.close()


def test_a_hanging_grader_times_out_and_the_next_call_gets_a_fresh_process():
    source = "import time\ndef grade(sample, item):\n    if item['hang']:\n        time.sleep(60)\n    return 1.0\n"
    proc = GraderProcess(source, None, timeout_s=1.0)
    try:
        assert proc({}, {"hang": False}) == 1.0
        started = time.monotonic()
        with pytest.raises(GraderError, match="took longer than 1 s to grade"):
            proc({}, {"hang": True})
        assert time.monotonic() - started < 10
        assert proc({}, {"hang": False}) == 1.0
    finally:
        proc.close()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def grade(sample, item):\n    return 'high'\n", "raised ValueError: could not convert string to float: 'high'"),
        ("def grade(sample, item):\n    return float('nan')\n", "returned nan, not a finite number"),
        ("import no_such_module_here\ndef grade(sample, item):\n    return 1\n", "could not be loaded"),
    ],
)
def test_unusable_results_are_named(source, message):
    proc = GraderProcess(source, None, timeout_s=20)
    try:
        with pytest.raises(GraderError, match=message):
            proc({}, {})
    finally:
        proc.close()


def test_failures_are_named_with_the_row_and_stop_after_the_allowed_count():
    from cluster.graders.grading import GraderFailures

    g = grader(name="strict", type="python", source="def grade(sample, item):\n    raise RuntimeError('bad row')\n")
    with Grading([g], max_failures=2) as grading:
        assert grading.score("x", {}, "data.jsonl:1").reward == 0.0
        assert grading.score("x", {}, "data.jsonl:2").reward == 0.0
        with pytest.raises(GraderFailures, match=r"(?s)3 grader failures.*'strict' on data.jsonl:1: raised RuntimeError"):
            grading.score("x", {}, "data.jsonl:3")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"source": "def grade(sample, item)\n  return 1"}, "source: is not valid Python"),
        ({"source": "def score(sample, item):\n    return 1\n"}, "source: defines no top-level function grade"),
        ({"function": "not a function"}, "function: 'not a function' is not module:function"),
        ({}, "source: give exactly one of source and function"),
    ],
)
def test_bad_python_graders_are_named_at_validation(fields, problem):
    g = ADAPTER.validate_python({"type": "python", "name": "p", **fields})
    assert [str(p) for p in g.problems()][0].startswith(problem)


def test_a_service_can_switch_python_graders_off(monkeypatch):
    monkeypatch.setenv("RAYFIT_PYTHON_GRADERS", "off")
    g = ADAPTER.validate_python({"type": "python", "name": "p", "source": SOURCE})
    assert [p.field for p in g.problems()] == ["type"]
    assert "switched off" in g.problems()[0].problem
