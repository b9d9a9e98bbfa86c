"""DPO (ZeRO-3) and KTO (ZeRO-2) on 2 Ray Train workers give the same per-step losses as one process."""

from __future__ import annotations

import pytest

from cluster.spec import validate_spec
from cluster.training.trainer import fit, loop_config
from tests.cluster.training.conftest import log_losses, run_single_process, tiny_spec
from tests.cluster.training.preference_data import prepared, write_feedback, write_pairs

pytestmark = pytest.mark.slow


def _two_vs_one(tmp_path, spec: dict, train_path: str, micro_batch: int) -> tuple[dict, dict]:
    """Losses of `spec` on 2 workers, and of one process accumulating both workers' micro-batches."""
    fit(validate_spec(spec), train_path, None)
    single = {
        **spec,
        "cluster": {**spec["cluster"], "num_workers": 1},
        "train": {**spec["train"], "gradient_accumulation_steps": 2},
        "output": {"storage": str(tmp_path), "name": spec["output"]["name"] + "-1p"},
    }
    run_single_process(loop_config(validate_spec(single), train_path, None), tmp_path)
    return log_losses(tmp_path / spec["output"]["name"]), log_losses(tmp_path / single["output"]["name"])


def _assert_same(two: dict, one: dict) -> None:
    assert sorted(two) == sorted(one) == list(range(1, 11))
    for step in two:
        assert abs(two[step] - one[step]) / abs(one[step]) <= 1e-4, (step, two[step], one[step])


def test_dpo_zero3_two_workers_match_one_process(ray_local, tiny_model_dir, tmp_path):
    data = {"train": [{"path": str(write_pairs(tmp_path / "pairs.jsonl", 48))}], "eval_split": 0.0}
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "dpo-z3",
        data=data,
        cluster={"sharding": "deepspeed_zero3"},
        train={"objective": "dpo", "eval_steps": None, "save_steps": 10, "learning_rate": 5e-3},
    )
    two, one = _two_vs_one(tmp_path, spec, prepared(spec, tmp_path / "data")[0], 1)
    _assert_same(two, one)
    assert two[10] < two[1]  # DPO's loss starts at log 2 (policy = reference) and falls as the margin grows


def test_kto_zero2_two_workers_match_one_process(ray_local, tiny_model_dir, tmp_path):
    data = {"train": [{"path": str(write_feedback(tmp_path / "feedback.jsonl", 96))}], "eval_split": 0.0}
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "kto-z2",
        data=data,
        cluster={"sharding": "deepspeed_zero2"},
        train={"objective": "kto", "eval_steps": None, "save_steps": 10, "learning_rate": 5e-3, "micro_batch_size": 2},
    )
    two, one = _two_vs_one(tmp_path, spec, prepared(spec, tmp_path / "data")[0], 2)
    _assert_same(two, one)
