"""Offline metrics, exact match, format compliance, the gate and the evaluate spec's checks: exact values."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from cluster.evaluation.report import gate, markdown
from cluster.evaluation.scoring import compliant, text_metrics
from cluster.spec import EvaluateSpec, SpecError, validate_spec

PREDS = ["Use a hard hat on site.", "The slab cures for 28 days", "no idea"]
REFS = ["Always use a hard hat on the site.", "The slab cures for 28 days.", "Concrete needs curing."]


def test_rouge_l_and_bleu_match_the_reference_libraries_offline():
    got = text_metrics(PREDS, REFS, EvaluateSpec())
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected_rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS, strict=False)) / 3
    assert got["rouge_l"] == pytest.approx(expected_rouge, abs=1e-12)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert got["exact_match"] == 0.0 and got["format_compliance"] is None
    same = text_metrics(REFS, REFS, EvaluateSpec())
    assert same["rouge_l"] == 1.0 and same["bleu"] == pytest.approx(100.0) and same["exact_match"] == 1.0


def test_exact_match_ignores_case_and_spacing():
    assert text_metrics(["  the SLAB\ncures "], ["The slab cures"], EvaluateSpec())["exact_match"] == 1.0


def test_format_compliance_by_regex_and_json_schema():
    regex = EvaluateSpec(format_regex=r"Answer: \w+\.")
    assert compliant("Answer: yes.", regex) and not compliant("Answer: yes. And more", regex)
    schema = EvaluateSpec(json_schema={"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}})
    assert compliant('{"answer": "yes"}', schema)
    assert not compliant('{"answer": 3}', schema) and not compliant("not json", schema)
    assert text_metrics(['{"answer": "a"}', "b"], ["a", "b"], schema)["format_compliance"] == 0.5


def test_gate_compares_in_the_right_direction():
    cfg = EvaluateSpec(max_regression=0.05)
    assert gate({"eval_loss": 2.0}, {"eval_loss": 2.08}, cfg) == {
        "metric": "eval_loss",
        "max_regression": 0.05,
        "worse_by": pytest.approx(0.04),
        "passed": True,
    }
    assert gate({"eval_loss": 2.0}, {"eval_loss": 2.2}, cfg)["passed"] is False
    rouge = EvaluateSpec(max_regression=0.0, gate_metric="rouge_l")
    assert gate({"rouge_l": 0.4}, {"rouge_l": 0.5}, rouge)["passed"] is True
    assert gate({"rouge_l": 0.4}, {"rouge_l": 0.3}, rouge)["worse_by"] == pytest.approx(0.25)
    assert gate({"eval_loss": 2.0}, {"eval_loss": 9.0}, EvaluateSpec())["passed"] is True  # no threshold: never fails


def test_markdown_table_marks_better_and_worse():
    side = {
        "eval_loss": 2.0,
        "perplexity": 7.39,
        "rouge_l": 0.2,
        "bleu": 5.0,
        "exact_match": 0.0,
        "format_compliance": None,
        "eval_tokens": 100,
        "model": "m",
    }
    report = {
        "run": "r",
        "eval_rows": 3,
        "generation_samples": 2,
        "max_new_tokens": 8,
        "base": side,
        "tuned": {**side, "eval_loss": 1.5, "rouge_l": 0.1},
        "gate": gate(side, side, EvaluateSpec()),
        "samples": [{"prompt": "q|x", "reference": "a", "base": "", "tuned": "a\nb"}],
    }
    md = markdown(report)
    assert "on 3 held-out samples (100 scored tokens)" in md  # no eval_samples (preference pairs): rows are samples
    assert "on 26 held-out samples (9 packed rows)" in markdown({**report, "eval_rows": 9, "eval_samples": 26})
    assert "| eval loss | 2.0000 | 1.5000 | -0.5000 better |" in md
    assert "| ROUGE-L | 0.2000 | 0.1000 | -0.1000 worse |" in md
    assert "format compliance" not in md and "| a | (empty) | a<br>b |" in md
    # the gate line says which way the tuned model moved (a gain was once printed as "worse by -1.0000")
    pref = EvaluateSpec(max_regression=0.0, gate_metric="preference_accuracy")
    report["gate"] = gate({"preference_accuracy": 0.5}, {"preference_accuracy": 1.0}, pref)
    assert "Gate on preference_accuracy: tuned better by 100.0% of base, allowed 0.0% worse: **passed**." in markdown(report)
    report["gate"] = gate({"rouge_l": 0.4}, {"rouge_l": 0.3}, EvaluateSpec(max_regression=0.1, gate_metric="rouge_l"))
    assert "tuned worse by 25.0% of base, allowed 10.0% worse: **FAILED**." in markdown(report)


def _spec(evaluate: dict) -> dict:
    return {
        "model": {"base": "org/model"},
        "data": {"train": [{"path": "embedded:construction-faq"}]},
        "output": {"name": "x"},
        "evaluate": evaluate,
    }


def test_spec_rejects_bad_regex_schema_and_ungateable_format():
    with pytest.raises(SpecError) as err:
        validate_spec(
            _spec({"format_regex": "(unclosed", "json_schema": {"type": "nope"}, "gate_metric": "bleu", "max_regression": 0.1})
        )
    text = str(err.value)
    assert "evaluate.format_regex: not a valid regular expression" in text
    assert "evaluate.json_schema: not a valid JSON schema" in text
    with pytest.raises(SpecError, match="evaluate.gate_metric: format_compliance is gated but neither"):
        validate_spec(_spec({"gate_metric": "format_compliance"}))
    with pytest.raises(SpecError, match="evaluate.gate_metrc"):
        validate_spec(_spec({"gate_metrc": "bleu"}))
