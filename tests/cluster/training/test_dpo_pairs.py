"""`rayfit data pairs`: SFT rows -> (reference answer, the model's own answer) pairs, the answers from the batch
generation pipeline (vLLM engines on Ray Data)."""

from __future__ import annotations

import json

import pytest

from cluster.data.pairs import PairsReport, build_pairs, to_pairs
from cluster.spec import validate_spec
from tests.cluster.training.conftest import tiny_spec
from tests.cluster.training.preference_data import faq_records


def test_generation_equal_to_the_reference_is_skipped(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = json.dumps([{"role": "user", "content": "What is ROT?"}])
    answered = [
        {"where": "faq.jsonl:1", "prompt": prompt, "reference": "A deduction.", "generation": " a  DEDUCTION. "},
        {"where": "faq.jsonl:2", "prompt": prompt, "reference": "A deduction.", "generation": ""},
        {"where": "faq.jsonl:3", "prompt": prompt, "reference": "A tax deduction on labour.", "generation": "Paint."},
    ]
    report = PairsReport(source="faq.jsonl", out="pairs.jsonl", model="m")
    pairs = to_pairs(answered, tok, report)
    assert [p["source"] for p in pairs] == ["faq.jsonl:3"]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "A tax deduction on labour."}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "Paint."}]
    assert report.dropped["identical chosen/rejected"].examples == ["faq.jsonl:1 (the model already answers as the reference)"]
    assert report.dropped["empty"].examples == ["faq.jsonl:2 (the model generated nothing)"]
    assert report.length_bias["chosen_longer_fraction"] == 1.0
    report.rows_read, report.rows_over_limit = 3, 1  # what build_pairs records for --limit 2
    assert "Rows: read 3, left out by --limit 1, pairs kept 1" in report.to_table()


@pytest.mark.slow
def test_pairs_are_generated_on_ray_data_and_read_by_dpo(ray_local, smollm2_dir, tiny_model_dir, tmp_path):
    """With SmolLM2 (the tiny random model only repeats the newline that ends its prompt, an empty answer) on one
    eager vLLM engine: about 30-70 s on a busy 2-core box, most of it the engine's start."""
    from cluster.data import check_data
    from cluster.model.load import load_tokenizer

    sft = tmp_path / "sft.jsonl"
    rows = [{"instruction": r["instruction"], "output": r["output"]} for r in faq_records(6)]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"instruction": "A question nobody answered"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "pairs",
        data={"train": [{"path": str(out)}], "eval_split": 0.0},
        train={"objective": "dpo", "eval_steps": None},
        cluster={"num_workers": 1},
    )
    spec = validate_spec({**spec, "model": {**spec["model"], "base": "embedded:smollm2-135m-instruct"}})
    report = build_pairs(spec, str(sft), str(out), max_new_tokens=8, batch_size=4, enforce_eager=True)

    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["source"] for p in pairs] == [f"{sft}:{i}" for i in range(1, 7)]
    assert all(p["chosen"][0]["content"] == r["output"] for p, r in zip(pairs, rows, strict=False))
    assert report.dropped["missing field"].examples == [f"{sft}:7 (no 'output' (alpaca needs instruction and output))"]
    assert all(p["rejected"][0]["content"] and p["rejected"] != p["chosen"] for p in pairs)
    assert json.loads((tmp_path / "pairs.jsonl.report.json").read_text())["pairs_kept"] == 6
    assert "Rows: read 7, pairs kept 6" in report.to_table()  # nothing left out: no --limit
    checked = check_data(spec, load_tokenizer(spec))  # the DPO spec reads the pairs file unchanged
    assert checked.train_samples == 6 and not checked.dropped
