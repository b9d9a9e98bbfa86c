"""Distillation's training records (`--as-training-data`) and the teacher's refusals before anything starts."""

from __future__ import annotations

import json

import pytest

from cluster.errors import UserError
from cluster.generation.inputs import read_prompts
from cluster.generation.pipeline import prepare
from cluster.generation.settings import load_settings
from cluster.generation.training_rows import training_records
from cluster.spec.base import SpecError
from cluster.spec.data import SourceSpec

SYSTEM = "Answer in one short sentence."


def answer(index: int, output: str | None, finish: str = "stop", error: str | None = None) -> dict:
    return {"index": index, "where": f"q.jsonl:{index + 1}", "output": output, "finish_reason": finish, "error": error}


def test_answers_become_messages_records_without_the_teachers_system_prompt(tmp_path):
    rows = [{"prompt": "What is a permit?"}, {"instruction": "Who signs?", "output": "The owner."}]
    rows += [{"prompt": "Long?"}, {"prompt": "Failed?"}, {"prompt": "Empty?"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:1] + rows[2:]))
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[1]) + "\n")
    prompts = {p.index: p for p in read_prompts(SourceSpec(path=str(tmp_path / "q.jsonl")), SYSTEM)}
    assert prompts[0].messages[0] == {"role": "system", "content": SYSTEM}  # the teacher is told
    answers = [
        answer(0, " A paper. "),
        answer(1, "It goes on and on", finish="length"),
        answer(2, None, finish="error", error="the teacher endpoint did not answer within 1 s (1 tries)"),
        answer(3, "  "),
    ]
    answers[1]["output_tokens"] = 64
    settings = load_settings(None, {"model": "m", "input": "q.jsonl", "output": "o.jsonl", "as_training_data": True}, [])
    records, rejected = training_records(answers, prompts, settings)
    assert records == [
        {
            "messages": [{"role": "user", "content": "What is a permit?"}, {"role": "assistant", "content": "A paper."}],
            "source": "q.jsonl:1",
        }
    ]
    assert [r["rejected_because"] for r in rejected] == [
        "cut off at max_tokens (64 tokens)",
        "the teacher endpoint did not answer within 1 s (1 tries)",
        "empty answer",
    ]
    kept = training_records(answers[:1], prompts, settings.model_copy(update={"keep_system_prompt": True}))[0]
    assert kept[0]["messages"][0] == {"role": "system", "content": SYSTEM}
    # an alpaca record's own answer is the reference, not part of the student's conversation
    alpaca = read_prompts(SourceSpec(path=str(tmp_path / "a.jsonl")), SYSTEM)[0]
    assert alpaca.untold == [{"role": "user", "content": "Who signs?"}] and alpaca.reference == "The owner."


def test_teacher_settings_are_checked_before_any_engine_or_request(tmp_path, monkeypatch):
    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    base = {"model": "gpt-x", "input": str(tmp_path / "q.jsonl"), "output": str(tmp_path / "o.jsonl")}
    monkeypatch.delenv("RAYFIT_TEST_NO_SUCH_KEY", raising=False)
    teacher = {"url": "http://127.0.0.1:9/v1", "api_key_env": "RAYFIT_TEST_NO_SUCH_KEY"}
    with pytest.raises(UserError, match=r"teacher.api_key_env: the environment variable RAYFIT_TEST_NO_SUCH_KEY is not set"):
        prepare(load_settings(None, base | {"teacher": teacher}, []))
    with pytest.raises(SpecError) as e:
        load_settings(None, base | {"output": "o.parquet", "as_training_data": True, "adapter": "a", "teacher": teacher}, [])
    assert "as_training_data: training records are written as JSON Lines" in str(e.value)
    assert "adapter: a teacher endpoint answers with its own model" in str(e.value)
    with pytest.raises(SpecError, match=r"teacher.timeout_s: Input should be greater than 0"):
        load_settings(None, base | {"teacher": {**teacher, "timeout_s": 0}}, [])
