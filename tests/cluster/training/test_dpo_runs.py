"""DPO runs on 2 Ray workers: resume after a worker failure, and warm starts (SFT -> SFT -> DPO) with lineage."""

from __future__ import annotations

import json
import math

import pytest

from cluster.manifest import read_manifest
from cluster.spec import validate_spec
from cluster.training.trainer import fit
from tests.cluster.training.conftest import eval_losses, log_losses, tiny_spec
from tests.cluster.training.preference_data import prepared, write_pairs

pytestmark = pytest.mark.slow


def test_dpo_resumes_after_worker_failure_with_the_same_final_loss(ray_local, tiny_model_dir, tmp_path):
    """Over 60 s: two fits, the uninterrupted reference and the faulty run, whose worker group starts twice."""
    data = {"train": [{"path": str(write_pairs(tmp_path / "pairs.jsonl", 48))}], "eval_split": 0.1}
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "dpo",
        data=data,
        train={"objective": "dpo", "eval_steps": 5, "save_steps": 5, "learning_rate": 5e-3},
    )
    train_path, eval_path = prepared(spec, tmp_path / "data")
    fit(validate_spec(spec), train_path, eval_path)
    faulty = {**spec, "output": {"storage": str(tmp_path), "name": "dpo-faulty"}}
    fit(validate_spec(faulty), train_path, eval_path, extra_env={"RAYFIT_FAIL_AT_STEP": "7"})

    run = tmp_path / "dpo-faulty"
    assert (run / ".fault-injected-at-step-7").is_file()
    assert json.loads((run / "checkpoint_00000010" / "trainer_state.json").read_text())["global_step"] == 10
    final, expected = log_losses(run)[10], log_losses(tmp_path / "dpo")[10]
    assert abs(final - expected) / expected <= 1e-3, (final, expected)
    manifest = read_manifest(str(run / "checkpoint_00000010"))
    assert manifest["spec"]["train"]["objective"] == "dpo" and manifest["method"] == "lora"
    assert set(read_manifest(str(run / "checkpoint_00000010"))["files"]) >= {"adapter_model.safetensors"}
    assert not (run / "checkpoint_00000010" / "ref").exists()  # one adapter saved: the reference is the disabled adapter


def test_warm_starts_continue_the_model_and_record_lineage(lora_run, tiny_model_dir, tiny_data, tmp_path):
    """Over 60 s: two fits here (B, C) and, when it runs first, the package's 10-step LoRA run A."""
    _, a_run, _ = lora_run  # A: tiny_spec's 10-step LoRA run named sft-a, shared with test_ray_training
    b = tiny_spec(tiny_model_dir, tmp_path, "sft-b", model={"init_from": str(a_run)}, train={"max_steps": 5})
    fit(validate_spec(b), tiny_data["train_path"], tiny_data["eval_path"])
    # B's evaluation before its first step scores A's final weights on the same eval rows
    assert eval_losses(tmp_path / "sft-b")[0] == pytest.approx(eval_losses(a_run)[-1], rel=1e-5)
    lineage_b = read_manifest(str(tmp_path / "sft-b" / "checkpoint_00000005"))["lineage"]
    assert lineage_b["run"] == "sft-a" and lineage_b["uri"].endswith("sft-a/checkpoint_00000010")
    assert lineage_b["step"] == 10 and lineage_b["parent"] is None

    # DPO continuing B's adapter: the reference is B, so the first DPO loss is exactly log 2 (policy == reference)
    pairs = {"train": [{"path": str(write_pairs(tmp_path / "pairs.jsonl", 24))}], "eval_split": 0.0}
    c = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "dpo-c",
        data=pairs,
        model={"init_from": str(tmp_path / "sft-b" / "checkpoint_00000005")},
        train={"objective": "dpo", "max_steps": 2, "eval_steps": None, "save_steps": 2},
    )
    fit(validate_spec(c), prepared(c, tmp_path / "data")[0], None)
    assert log_losses(tmp_path / "dpo-c")[1] == pytest.approx(math.log(2), rel=1e-4)
    lineage_c = read_manifest(str(tmp_path / "dpo-c" / "checkpoint_00000002"))["lineage"]
    assert lineage_c["run"] == "sft-b" and lineage_c["parent"]["run"] == "sft-a"
