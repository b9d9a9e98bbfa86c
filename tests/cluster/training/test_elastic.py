"""Elastic runs: a ZeRO-3 checkpoint written by 2 workers continues on 1, and one written by 1 continues on 2, with
the same global batch; the losses stay an uninterrupted run's. Both are one chain of attempts on one run folder
(1 worker, then 2, then 1 again), so that three fits serve the two transitions. Ray's own resizing (a node lost with no
replacement, then capacity back) is exercised on two nodes in tests/cluster/multinode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.spec import validate_spec
from cluster.training.elastic import checkpoint_world, for_world
from cluster.training.trainer import fit, loop_config
from tests.cluster.training.conftest import log_losses, tiny_spec

pytestmark = pytest.mark.slow

# Checkpoints every 4 steps; the attempt on 1 worker fails at step 6, the one on 2 at step 10, each after a checkpoint.
STEPS, SAVE, FAILS = 12, 4, (6, 10)
# (workers that wrote a checkpoint, workers that resumed from it) -> (that checkpoint's step, the step of the resumed
# attempt's first checkpoint, up to which a test reads the losses)
TRANSITIONS = {(1, 2): (SAVE, 2 * SAVE), (2, 1): (2 * SAVE, STEPS)}


def _spec(model_dir, storage, workers: int) -> dict:
    """Global batch 2: two workers with one micro-batch each, or one worker accumulating two. Three checkpoints kept:
    the chain's tests read all three."""
    spec = tiny_spec(
        model_dir,
        storage,
        "elastic",
        model={"method": "full"},
        cluster={"sharding": "deepspeed_zero3", "num_workers": workers, "max_failures": 0},
        train={
            "max_steps": STEPS,
            "save_steps": SAVE,
            "keep_checkpoints": 3,
            "eval_steps": None,
            "learning_rate": 3e-4,
            "gradient_accumulation_steps": 2 // workers,
        },
    )
    del spec["model"]["lora"]
    return spec


def one_process_runs(model_dir: Path, data: dict, storage: Path) -> list[dict]:
    """The same global batch in one process, without interruption, for the package's `one_process` fixture."""
    return [loop_config(validate_spec(_spec(model_dir, storage, 1)), data["train_path"], None)]


@pytest.fixture(scope="module")
def chain(ray_local, tiny_model_dir, tiny_data, tmp_path_factory) -> Path:
    """The run folder of one run trained by three attempts: on 1 worker until the injected failure at step 6 (after
    checkpoint 4), resumed on 2 until the one at step 10 (after checkpoint 8), resumed on 1 to the end (step 12)."""
    from ray.train import TrainingFailedError

    storage = tmp_path_factory.mktemp("elastic")
    for workers, fail in zip((1, 2), FAILS, strict=True):
        env = {"RAYFIT_FAIL_AT_STEP": str(fail)}
        with pytest.raises(TrainingFailedError):  # the injected failure ends the attempt (no restarts)
            fit(validate_spec(_spec(tiny_model_dir, storage, workers)), tiny_data["train_path"], None, extra_env=env)
    fit(validate_spec(_spec(tiny_model_dir, storage, 1)), tiny_data["train_path"], None)
    return storage / "elastic"


def _losses_up_to(run: Path, step: int) -> dict[int, float]:
    """Per-step losses as the attempt that wrote checkpoint `step` had them: the run's log when the run ended there,
    else the checkpoint's trainer state (a failed attempt writes no log_history.json)."""
    if step == STEPS:
        return log_losses(run)
    history = json.loads((run / f"checkpoint_{step:08d}" / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_zero3_checkpoint_resumes_on_another_worker_count(chain, one_process, first, then):
    """Over 60 s for the first of the two: the chain's three fits (a ZeRO-3 universal conversion in two of them)."""
    run, uninterrupted = chain, one_process["elastic"]
    resumed_at, last_step = TRANSITIONS[(first, then)]
    checkpoint = run / f"checkpoint_{resumed_at:08d}"
    assert json.loads((checkpoint / "manifest.json").read_text())["world_size"] == first
    last = json.loads((run / f"checkpoint_{last_step:08d}" / "manifest.json").read_text())
    assert last["world_size"] == then
    assert last["resumed_from"] == {"checkpoint": str(checkpoint), "world_size": first, "resharded_for": then}
    # the stored checkpoint still holds exactly its manifest's files: the universal copy lives on the worker
    assert not list(checkpoint.glob("*_universal"))

    # steps up to the checkpoint restored from its trainer state, the next ones trained after resuming
    resumed = _losses_up_to(run, last_step)
    assert sorted(resumed) == list(range(1, last_step + 1)), resumed
    for step, loss in resumed.items():  # equal here (DeepSpeed's shared step counter made it drift 3e-4 by step 8)
        assert abs(loss - uninterrupted[step]) / uninterrupted[step] <= 1e-4, (step, loss, uninterrupted[step])
    assert resumed[last_step] < uninterrupted[1]


def test_gradient_accumulation_keeps_the_global_batch():
    spec = validate_spec(
        {
            "model": {"base": "x"},
            "data": {"train": [{"path": "embedded:construction-faq"}]},
            "train": {"micro_batch_size": 2, "gradient_accumulation_steps": 3},
            "cluster": {"num_workers": 8, "min_workers": 3, "gpus_per_worker": 0},
            "output": {"storage": "/tmp/runs", "name": "elastic"},
        }
    )
    assert for_world(spec, 8) == (spec, None)
    four, line = for_world(spec, 4)
    assert four.train.gradient_accumulation_steps == 6 and line.endswith("global batch 48 rows")
    five, line = for_world(spec, 5)  # 24 micro-batches do not split over 5 workers: the nearest global batch
    assert five.train.gradient_accumulation_steps == 5
    assert "global batch 50 rows (the spec's is 48: 5 workers do not divide it)" in line
    assert five.cluster.num_workers == 8 and five.model_dump(exclude={"train"}) == spec.model_dump(exclude={"train"})


def test_checkpoint_world_from_the_manifest_or_its_zero_shards():
    assert checkpoint_world({"world_size": 3, "files": {}}) == 3
    # written before world_size was recorded: one optimizer shard per rank (model shards are not counted twice)
    shards = {f"global_step4/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt": {} for r in range(4) for kind in ("optim", "model")}
    assert checkpoint_world({"files": {**shards, "trainer_state.json": {}}}) == 4
    assert checkpoint_world({"files": {"adapter_model.safetensors": {}}}) is None  # DDP: nothing to reshard
