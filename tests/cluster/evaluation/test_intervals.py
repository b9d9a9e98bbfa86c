"""95% bootstrap intervals over rows: the same answers are within noise and fail a gate asking for improvement."""

from __future__ import annotations

import pytest

from cluster.errors import UserError
from cluster.evaluation.intervals import intervals
from cluster.evaluation.report import enforce_gate, gate, markdown
from cluster.spec import EvaluateSpec
from cluster.spec.base import SpecError
from cluster.spec.load import validate_model

REFERENCES = [f"A permit is needed for project {i}." for i in range(40)]
WRONG = [f"The weather is fine on day {i}." for i in range(40)]


def report_for(base: list[str], tuned: list[str], cfg: EvaluateSpec) -> dict:
    from cluster.evaluation.scoring import text_metrics

    b, t = text_metrics(base, REFERENCES, cfg), text_metrics(tuned, REFERENCES, cfg)
    b["model"], t["model"] = "base", "tuned"
    b["eval_tokens"] = t["eval_tokens"] = 100
    spans = intervals(base, tuned, REFERENCES, cfg)
    return {
        "run": "r",
        "eval_rows": 40,
        "generation_samples": 40,
        "max_new_tokens": 8,
        "base": b,
        "tuned": t,
        "intervals": spans,
        "gate": gate(b, t, cfg, spans),
        "samples": [],
    }


def test_the_same_answers_are_within_noise_and_do_not_pass_an_improvement_gate():
    answers = REFERENCES[:20] + WRONG[20:]  # exact match 0.5 for both
    cfg = EvaluateSpec(gate_metric="exact_match", min_improvement=0.0)
    report = report_for(answers, answers, cfg)
    em = report["intervals"]["exact_match"]
    assert em["difference"] == [0.0, 0.0] and em["within_noise"]
    low, high = em["base"]
    assert 0.3 < low < 0.5 < high < 0.7  # 40 rows: one answer moves exact match by 2.5 points
    assert report["gate"]["passed"] is False and report["gate"]["within_noise"] is True
    md = markdown(report)
    assert "within noise" in md and "**FAILED**" in md and "95% bootstrap intervals" in md
    with pytest.raises(UserError, match=r"does not beat base .* tuned - base is in \[\+0.0000, \+0.0000\] \(within noise\)"):
        enforce_gate(report, "/tmp/eval")


def test_a_small_win_is_noise_and_a_large_one_passes():
    base = REFERENCES[:10] + WRONG[10:]
    slightly = REFERENCES[:12] + WRONG[12:]  # 2 rows of 40 better: point value up, interval holds 0
    cfg = EvaluateSpec(gate_metric="exact_match", min_improvement=0.0)
    small = report_for(base, slightly, cfg)
    assert small["tuned"]["exact_match"] > small["base"]["exact_match"]
    low, high = small["intervals"]["exact_match"]["difference"]
    assert low <= 0 < high and small["intervals"]["exact_match"]["within_noise"] is True  # the interval holds 0
    assert small["gate"]["passed"] is False and small["gate"]["within_noise"] is True
    large = report_for(base, REFERENCES[:30] + WRONG[30:], cfg)
    assert large["intervals"]["exact_match"]["within_noise"] is False
    assert large["gate"]["passed"] is True and large["gate"]["difference_interval"][0] > 0.3
    enforce_gate(large, "/tmp/eval")  # passes: no error


def test_a_regression_gate_reads_the_interval_not_the_point_value():
    base = REFERENCES[:20] + WRONG[20:]
    worse = REFERENCES[:19] + WRONG[19:]  # one row worse of 40: the point value is 5% worse, the interval holds 0
    cfg = EvaluateSpec(gate_metric="exact_match", max_regression=0.0)
    report = report_for(base, worse, cfg)
    assert gate(report["base"], report["tuned"], cfg)["passed"] is False  # point values alone would fail it
    assert report["gate"]["passed"] is True and report["intervals"]["exact_match"]["within_noise"]


def test_min_improvement_needs_a_metric_with_an_interval():
    with pytest.raises(SpecError, match="min_improvement needs a per-row interval, which eval_loss does not have"):
        validate_model(EvaluateSpec, {"min_improvement": 0.0})
    assert EvaluateSpec().max_samples is None  # every held-out row by default
