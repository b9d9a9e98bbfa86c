"""`rayfit graders run`: graders tried on one answer or a file of them, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.cluster.test_spec import minimal

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip
FORMAT = {"type": "regex", "name": "digits", "pattern": r"\d+"}


def rayfit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=120)


def test_one_answer_against_a_job_specs_graders(tmp_path):
    spec = minimal(train={"objective": "grpo", "micro_batch_size": 2, "eval_steps": None,
                          "grpo": {"num_generations": 2, "graders": [EXACT, FORMAT], "weights": [3, 1]}})  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    out = rayfit("graders", "run", str(tmp_path / "job.yaml"), "--sample", "41", "--item", '{"answer": "42"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "where": "--item", "reward": 0.25, "passed": False, "scores": {"exact": 0.0, "digits": 1.0}, "failures": []
    }  # fmt: skip


def test_a_file_of_answers_gets_a_line_each_and_a_summary(tmp_path):
    (tmp_path / "graders.yaml").write_text(yaml.safe_dump([EXACT]))
    rows = [{"sample": "42", "item": {"answer": "42"}}, {"sample": "7", "item": {"answer": "8"}}, {"sample": "1", "item": {}}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = rayfit("graders", "run", str(tmp_path / "graders.yaml"), "--file", str(tmp_path / "rows.jsonl"))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["reward"] for line in lines[:3]] == [1.0, 0.0, 0.0]
    assert lines[2]["failures"] == [
        f"grader 'exact' on {tmp_path}/rows.jsonl:3: '{{{{item.answer}}}}' has no value: 'answer' is missing."
    ]
    assert lines[3]["summary"] == {"answers": 3, "reward": 1 / 3, "pass_rate": 1 / 3, "reward_exact": 1 / 3}
    assert out.returncode == 1  # a grader failed on a row


def test_an_invalid_grader_is_named_without_a_traceback(tmp_path):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({**EXACT, "operation": "startswith"}))
    out = rayfit("graders", "run", str(tmp_path / "g.yaml"), "--sample", "x")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "graders.0.string_check.operation: Input should be 'eq', 'ne', 'like' or 'ilike'" in out.stderr


def test_help_has_an_example():
    out = rayfit("graders", "run", "--help")
    assert out.returncode == 0 and "rayfit graders run my-job.yaml --sample" in out.stdout
