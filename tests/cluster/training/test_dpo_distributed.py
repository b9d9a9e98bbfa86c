"""DPO (ZeRO-3) and KTO (ZeRO-2) on 2 Ray Train workers give the same per-step losses as one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.spec import validate_spec
from cluster.training.trainer import fit, loop_config
from tests.cluster.training.conftest import log_losses, tiny_spec
from tests.cluster.training.preference_data import prepared, write_feedback, write_pairs

pytestmark = pytest.mark.slow


def _specs(model_dir: Path, tmp: Path) -> dict[str, dict]:
    """The DPO run under ZeRO-3 and the KTO run under ZeRO-2, by name, with their preference files written."""
    pairs = {"train": [{"path": str(write_pairs(tmp / "pairs.jsonl", 48))}], "eval_split": 0.0}
    feedback = {"train": [{"path": str(write_feedback(tmp / "feedback.jsonl", 96))}], "eval_split": 0.0}
    return {
        "dpo-z3": tiny_spec(
            model_dir,
            tmp,
            "dpo-z3",
            data=pairs,
            cluster={"sharding": "deepspeed_zero3"},
            train={"objective": "dpo", "eval_steps": None, "save_steps": 10, "learning_rate": 5e-3},
        ),
        "kto-z2": tiny_spec(
            model_dir,
            tmp,
            "kto-z2",
            data=feedback,
            cluster={"sharding": "deepspeed_zero2"},
            train={"objective": "kto", "eval_steps": None, "save_steps": 10, "learning_rate": 5e-3, "micro_batch_size": 2},
        ),
    }


def _single(spec: dict) -> dict:
    """The same global batch in one process: one worker accumulating both workers' micro-batches."""
    return {
        **spec,
        "cluster": {**spec["cluster"], "num_workers": 1},
        "train": {**spec["train"], "gradient_accumulation_steps": 2},
        "output": {**spec["output"], "name": spec["output"]["name"] + "-1p"},
    }


def one_process_runs(model_dir: Path, data: dict, storage: Path) -> list[dict]:
    """Both runs in one process accumulating both workers' micro-batches, for the package's `one_process` fixture."""
    tmp = storage / "preference"
    tmp.mkdir()
    return [
        loop_config(validate_spec(_single(spec)), prepared(spec, tmp / f"{name}-data")[0], None)
        for name, spec in _specs(model_dir, tmp).items()
    ]


@pytest.fixture(scope="module")
def prepared_runs(tiny_model_dir, tmp_path_factory) -> dict[str, tuple[dict, str]]:
    """By name: the spec and its prepared train data."""
    tmp = tmp_path_factory.mktemp("preference")
    return {name: (spec, prepared(spec, tmp / f"{name}-data")[0]) for name, spec in _specs(tiny_model_dir, tmp).items()}


def _two_vs_one(prepared_runs: dict, one_process: dict, name: str) -> tuple[dict, dict]:
    """Losses of run `name` on 2 workers, and of one process accumulating both workers' micro-batches."""
    spec, train_path = prepared_runs[name]
    fit(validate_spec(spec), train_path, None)
    return log_losses(Path(spec["output"]["storage"]) / name), one_process[f"{name}-1p"]


def _assert_same(two: dict, one: dict) -> None:
    assert sorted(two) == sorted(one) == list(range(1, 11))
    for step in two:
        assert abs(two[step] - one[step]) / abs(one[step]) <= 1e-4, (step, two[step], one[step])


def test_dpo_zero3_two_workers_match_one_process(ray_local, prepared_runs, one_process):
    """Over 60 s: a 2-worker DeepSpeed run, and when it runs first the package's one-process baselines (this and the KTO
    run's among them)."""
    two, one = _two_vs_one(prepared_runs, one_process, "dpo-z3")
    _assert_same(two, one)
    assert two[10] < two[1]  # DPO's loss starts at log 2 (policy = reference) and falls as the margin grows


def test_kto_zero2_two_workers_match_one_process(ray_local, prepared_runs, one_process):
    two, one = _two_vs_one(prepared_runs, one_process, "kto-z2")
    _assert_same(two, one)
