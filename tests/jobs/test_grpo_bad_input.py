"""Bad GRPO input is named before any worker starts, without a traceback: spec problems by the finetune job itself
(file, field and line), data problems (missing fields, python graders that raise or hang) by `rayfit data check`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip


def _spec(data: str, graders: list, **grpo) -> dict:
    return {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": data}], "eval_split": 0},
        "train": {"objective": "grpo", "micro_batch_size": 2, "eval_steps": None,
                  "grpo": {"num_generations": 2, "graders": graders, **grpo}},
        "output": {"name": "bad", "storage": str(REPO / ".pytest-unused")},
    }  # fmt: skip


def _run(tmp_path, spec: dict, *command: str) -> subprocess.CompletedProcess:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [sys.executable, "-m", *command, str(tmp_path / "job.yaml")], cwd=REPO, capture_output=True, text=True, timeout=180
    )


def test_the_finetune_job_names_an_unknown_operation_with_its_line(tmp_path):
    out = _run(tmp_path, _spec(str(tmp_path / "d.jsonl"), [{**EXACT, "operation": "sounds_like"}]), "jobs.finetune")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{tmp_path / 'job.yaml'}: train.grpo.graders.0.string_check.operation (line ")
    assert "(got 'sounds_like')" in out.stderr and "'eq', 'ne', 'like' or 'ilike'" in out.stderr


def test_the_finetune_job_names_an_invalid_schema_and_a_group_of_one_at_once(tmp_path):
    shape = {"type": "json_schema", "name": "shape", "schema": {"type": "object", "required": "answer"}}
    out = _run(tmp_path, _spec(str(tmp_path / "d.jsonl"), [shape], num_generations=1), "jobs.finetune")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "train.grpo.graders.0.schema" in out.stderr and "train.grpo.num_generations" in out.stderr
    assert "a group of one" in out.stderr


@pytest.mark.parametrize(
    ("rows", "grader", "named"),
    [
        ([{"prompt": "a", "answer": "1"}, {"prompt": "b"}], EXACT,
         "grader 'exact' reads {{{{item.answer}}}}, which 1 of 2 rows lack: {path}:2"),
        ([{"prompt": "a"}], {"type": "python", "name": "py", "source": "def grade(sample, item):\n    raise KeyError('x')\n"},
         "grader 'py' on {path}:1: raised KeyError"),
        ([{"prompt": "a"}], {"type": "python", "name": "py", "timeout_s": 1,
                             "source": "import time\ndef grade(sample, item):\n    time.sleep(30)\n"},
         "grader 'py' on {path}:1: took longer than 1 s"),
    ],
    ids=["missing-field", "raising-grader", "hanging-grader"],
)  # fmt: skip
def test_rayfit_data_check_names_the_row_and_the_grader(tmp_path, rows, grader, named):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run(tmp_path, _spec(str(path), [grader]), "jobs.cli", "data", "check")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("rayfit: the graders cannot score the data:")
    assert named.format(path=path) in out.stderr
