"""The finetune job end to end with objective dpo: data report, train, merge, preference evaluation."""

from __future__ import annotations

import json

import pytest

from cluster.spec import validate_spec
from tests.cluster.training.conftest import tiny_spec
from tests.cluster.training.preference_data import write_pairs

pytestmark = pytest.mark.slow


def test_dpo_job_trains_merges_and_reports_preference_metrics(ray_local, tiny_model_dir, tmp_path):
    from jobs.finetune import finetune

    # rejected is always the same evasive answer, which a random tiny model learns to avoid within a few steps
    pairs = str(write_pairs(tmp_path / "pairs.jsonl", 40, rejected="I am not sure, please ask someone else."))
    data = {"train": [{"path": pairs}], "eval_split": 0.2}
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "dpo-job",
        data=data,
        cluster={"num_workers": 1},
        train={
            "objective": "dpo",
            "max_steps": 8,
            "eval_steps": 4,
            "save_steps": 8,
            "learning_rate": 5e-3,
            "micro_batch_size": 2,
        },
        merge={"enabled": True},
        evaluate={
            "enabled": True,
            "max_samples": 0,  # preference metrics only: the answers' path (vLLM) is evaluation's, tested with SFT runs
            "gate_metric": "preference_accuracy",
            "max_regression": 0.5,
        },
    )
    record = finetune(validate_spec(spec), address="local")

    run = tmp_path / "dpo-job"
    report = json.loads((run / "data_report.json").read_text())
    assert report["objective"] == "dpo" and report["train_samples"] == 32 and report["eval_samples"] == 8
    assert report["length_bias"]["chosen_longer_fraction"] == 1.0  # every FAQ answer is longer than the evasion
    evaluation = json.loads((run / "eval" / "report.json").read_text())
    base, tuned = evaluation["base"], evaluation["tuned"]
    assert evaluation["eval_rows"] == 8
    assert base["preference_accuracy"] == 0.5 and base["reward_margin"] == 0.0  # the start is its own reference
    assert tuned["reward_margin"] > 0 and tuned["preference_accuracy"] > 0.5  # it learned to prefer chosen
    assert tuned["eval_loss"] < base["eval_loss"] == pytest.approx(0.6931, abs=1e-3)
    # the merged export scored against the base gives the DPO loss TRL computed with the adapter disabled
    trl_eval = [e["eval_loss"] for e in json.loads((run / "log_history.json").read_text()) if "eval_loss" in e]
    assert tuned["eval_loss"] == pytest.approx(trl_eval[-1], rel=1e-3)
    assert "preference accuracy" in (run / "eval" / "report.md").read_text()
    assert (run / "export" / "model.safetensors").is_file() and record["status"] == "succeeded"
