"""Preference rows: common public shapes are read, bad rows are dropped with file:line, good rows kept."""

from __future__ import annotations

import json

import pytest

from cluster.data import check_data as check_preferences  # the DPO/KTO recipes' checks, chosen by the spec
from cluster.data import prepare_datasets as prepare_preferences
from cluster.data.preference import BadRow, normalise_feedback, normalise_pair
from cluster.spec import validate_spec

USER = [{"role": "user", "content": "What is ROT?"}]
GOOD = [{"role": "assistant", "content": "A Swedish tax deduction for renovation labour."}]
BAD = [{"role": "assistant", "content": "A kind of paint."}]
EXPECTED = {"prompt": USER, "chosen": GOOD, "rejected": BAD}


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "What is ROT?", "chosen": GOOD[0]["content"], "rejected": BAD[0]["content"]},  # TRL standard, explicit
        {"prompt": USER, "chosen": GOOD, "rejected": BAD},  # TRL conversational, explicit
        {"chosen": USER + GOOD, "rejected": USER + BAD},  # implicit prompt (UltraFeedback binarized)
        {"prompt": "What is ROT?", "chosen": USER + GOOD, "rejected": USER + BAD},  # prompt column beside full chats
        {"question": "What is ROT?", "chosen": GOOD[0]["content"], "rejected": BAD[0]["content"]},  # orca_dpo_pairs
        {"instruction": "What is ROT?", "chosen_response": GOOD[0]["content"], "rejected_response": BAD[0]["content"]},
        {
            "chosen": [{"from": "human", "value": "What is ROT?"}, {"from": "gpt", "value": GOOD[0]["content"]}],
            "rejected": [{"from": "human", "value": "What is ROT?"}, {"from": "gpt", "value": BAD[0]["content"]}],
        },
        {"input": {"messages": USER}, "preferred_output": GOOD, "non_preferred_output": BAD},  # OpenAI's DPO fine-tuning
    ],
)
def test_common_pair_shapes_normalise_to_trl_conversational(record):
    row = normalise_pair(record)
    if record.get("chosen", [{}])[0].get("from") if isinstance(record.get("chosen"), list) else False:
        assert row["prompt"] == [{"role": "human", "content": "What is ROT?"}]  # ShareGPT roles are kept as given
        assert row["chosen"] == [{"role": "gpt", "content": GOOD[0]["content"]}]
        return
    assert row == EXPECTED


def test_openai_dpo_rows_are_detected_as_pairs_and_their_problems_named():
    from cluster.data.formats import _signatures

    row = {"input": {"messages": USER}, "preferred_output": GOOD, "non_preferred_output": BAD}
    assert _signatures(row) == {"preference"}  # `input` without `ideal` is not an evals sample
    with pytest.raises(BadRow, match="no 'non_preferred_output' field"):
        normalise_pair({k: v for k, v in row.items() if k != "non_preferred_output"})
    with pytest.raises(BadRow, match=r"needs 'input' as \{\"messages\""):
        normalise_pair({**row, "input": "What is ROT?"})
    with pytest.raises(BadRow, match="input.tools"):
        normalise_pair({**row, "input": {"messages": USER, "tools": [{"type": "function"}]}})


def test_system_column_and_system_prompt_go_first():
    rec = {"system": "Be brief.", "question": "What is ROT?", "chosen": "A deduction.", "rejected": "Paint."}
    assert normalise_pair(rec)["prompt"][0] == {"role": "system", "content": "Be brief."}
    plain = {k: v for k, v in rec.items() if k != "system"}
    assert normalise_pair(plain, "Answer as a tax adviser.")["prompt"][0]["content"] == "Answer as a tax adviser."


def test_kto_reads_labels_and_unpairs_pairs():
    up = normalise_feedback({"prompt": "What is ROT?", "completion": "A deduction.", "label": "true"})
    assert up == [{"prompt": USER, "completion": [{"role": "assistant", "content": "A deduction."}], "label": True}]
    two = normalise_feedback({"prompt": USER, "chosen": GOOD, "rejected": BAD})
    assert [(r["completion"], r["label"]) for r in two] == [(GOOD, True), (BAD, False)]
    with pytest.raises(BadRow, match="expected true/false"):
        normalise_feedback({"prompt": "q", "completion": "a", "label": "maybe"})


def _write(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _spec(model_dir, path, objective="dpo", **data) -> object:
    return validate_spec(
        {
            "model": {"base": str(model_dir), "dtype": "float32"},
            "data": {"train": [{"path": path}], "max_seq_len": 128, "eval_split": 0.0, **data},
            "train": {"objective": objective, "eval_steps": None, **({"micro_batch_size": 2} if objective == "kto" else {})},
            "output": {"storage": "/tmp/unused", "name": "pref"},
        }
    )


def test_bad_pairs_are_reported_with_file_line_and_good_pairs_kept(tiny_model_dir, tmp_path):
    good = [{"prompt": f"Question {i}?", "chosen": f"Right answer {i}.", "rejected": f"Wrong answer {i}."} for i in range(16)]
    bad = [
        {"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."},  # line 17: identical
        {"prompt": "Missing?", "chosen": "Only chosen."},  # line 18: no rejected
        {"prompt": "Typed?", "chosen": 42, "rejected": "A string."},  # line 19: wrong type
        {"prompt": "", "chosen": "An answer.", "rejected": "Another."},  # line 20: empty prompt
        "{not json",  # line 21: unparseable
        {"prompt": "Empty?", "chosen": "  ", "rejected": "Something."},  # line 22: empty answer
        {"prompt": "Long?", "chosen": "word " * 400, "rejected": "Short."},  # line 23: too long
        good[0],  # line 24: duplicate of line 1
    ]
    path = _write(tmp_path / "pairs.jsonl", good + bad)
    report = check_preferences(_spec(tiny_model_dir, path, max_dropped_fraction=0.5), None or _tok(tiny_model_dir))
    examples = {reason: e.examples for reason, e in report.dropped.items()}
    assert examples == {
        "identical chosen/rejected": [f"{path}:17 (chosen and rejected are the same answer, which teaches nothing)"],
        "missing field": [f"{path}:18 (no 'rejected' field (keys: ['chosen', 'prompt']))"],
        "wrong type": [f"{path}:19 ('chosen' is int; expected a string or a list of messages)"],
        "missing prompt": [f"{path}:20 ('prompt' is empty)"],
        "unparseable": [f"{path}:21 (invalid JSON: Expecting property name enclosed in double quotes at column 2)"],
        "empty": [f"{path}:22 ('chosen' is empty)"],
        "too long": [examples["too long"][0]],
        "duplicate": [f"{path}:24 (same as {path}:1)"],
    }
    assert examples["too long"][0].startswith(f"{path}:23 (") and "data.max_seq_len 128" in examples["too long"][0]
    assert report.rows_read == 24 and report.rows_dropped == 8 and report.train_samples == 16
    assert report.length_bias["chosen_longer_fraction"] == 0.0  # "Right answer i." and "Wrong answer i." tie
    assert "identical chosen/rejected" in report.to_table()


def test_prepared_pairs_are_what_trl_reads(tiny_model_dir, tmp_path):
    from trl.data_utils import is_conversational

    recs = [{"chosen": USER + GOOD, "rejected": USER + BAD}, {"prompt": "Q2?", "chosen": "Long right answer.", "rejected": "No."}]
    data = prepare_preferences(
        _spec(tiny_model_dir, _write(tmp_path / "p.jsonl", recs)), _tok(tiny_model_dir), str(tmp_path / "cache")
    )
    rows = data.train().to_list()
    assert sorted(r["where"] for r in rows) == [f"{tmp_path}/p.jsonl:1", f"{tmp_path}/p.jsonl:2"]
    assert all(is_conversational(r) for r in rows)
    assert data.report.length_bias["chosen_longer_fraction"] == 1.0  # both chosen answers are the longer one


def test_too_many_bad_rows_stop_before_training(tiny_model_dir, tmp_path):
    from cluster.data import DataQualityError

    path = _write(
        tmp_path / "p.jsonl",
        [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 3 + [{"prompt": "q", "chosen": "a", "rejected": "b"}],
    )
    with pytest.raises(DataQualityError, match=r"identical chosen/rejected: 3 \(e.g. .*p.jsonl:1"):
        check_preferences(_spec(tiny_model_dir, path, dedupe=False), _tok(tiny_model_dir))


def _tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
