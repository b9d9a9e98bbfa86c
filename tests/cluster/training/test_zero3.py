"""ZeRO-3: weights are partitioned as they load, and 2 workers train exactly like one process (one 2-worker run
serves both: each worker first loads the model under the ZeRO-3 config alone and records what it holds, then trains)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cluster.spec import validate_spec
from cluster.training.trainer import fit, loop_config
from tests.cluster.training.conftest import log_losses, tiny_spec

pytestmark = pytest.mark.slow


def _partition_probe(config: dict) -> None:
    """On each worker: load under the ZeRO-3 config and record every parameter's full and local sizes (in
    {run}/partition, the run folder being local in tests)."""
    import ray.train

    from cluster.model.load import load_model
    from cluster.training.deepspeed_config import deepspeed_config
    from cluster.training.loop import _init_deepspeed_comm

    spec = validate_spec(config["spec"])
    ctx = ray.train.get_context()
    _init_deepspeed_comm(on_gpu=False)
    model = load_model(spec, deepspeed_config(spec, ctx.get_world_size(), on_gpu=False))
    sizes = {n: [p.ds_numel, p.ds_tensor.numel(), p.numel()] for n, p in model.named_parameters()}
    out = Path(config["run"], "partition")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{ctx.get_world_rank()}.json").write_text(json.dumps(sizes))


def _probed_train_loop(config: dict) -> dict:
    """The partition probe, then the run's own training (train_loop seeds and loads its model afresh)."""
    from cluster.training.loop import train_loop

    _partition_probe(config)
    return train_loop(config)


def _spec(model_dir: Path, storage: Path, name: str, workers: int) -> dict:
    """A 10-step full fine-tune under ZeRO-3 with global batch 2: 2 workers, or one accumulating both micro-batches."""
    spec = tiny_spec(
        model_dir,
        storage,
        name,
        model={"method": "full"},
        cluster={"sharding": "deepspeed_zero3", "num_workers": workers},
        train={"eval_steps": None, "save_steps": 10, "learning_rate": 3e-4, "gradient_accumulation_steps": 2 // workers},
    )
    del spec["model"]["lora"]
    return spec


def one_process_runs(model_dir: Path, data: dict, storage: Path) -> list[dict]:
    """The same global batch in one process without Ray, for the package's `one_process` fixture."""
    return [loop_config(validate_spec(_spec(model_dir, storage, "zero3-1p", 1)), data["train_path"], None)]


@pytest.fixture(scope="module")
def two_workers(ray_local, tiny_model_dir, tiny_data, tmp_path_factory) -> Path:
    """The run folder of one 2-worker ZeRO-3 full fine-tune of 10 steps, with the partition probe."""
    storage = tmp_path_factory.mktemp("zero3")
    fit(validate_spec(_spec(tiny_model_dir, storage, "zero3-2w", 2)), tiny_data["train_path"], None, loop=_probed_train_loop)
    return storage / "zero3-2w"


def test_parameters_are_partitioned_at_load(two_workers, tiny_model_dir):
    """Pays for the module's 2-worker run (over 60 s on a busy machine): the probe runs on its workers before training."""
    from safetensors import safe_open

    run = two_workers
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        on_disk = {k: math.prod(f.get_slice(k).get_shape()) for k in f.keys()}
    ranks = [json.loads((run / "partition" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert sum(full for full, _, _ in ranks[0].values()) == sum(on_disk.values())
    for name, (full, local, materialised) in ranks[0].items():
        assert materialised == 0, f"{name} is whole on rank 0"  # the module holds an empty placeholder
        assert local == math.ceil(full / 2), f"{name}: rank 0 holds {local} of {full} elements"


def test_two_workers_match_one_process(two_workers, one_process):
    """Over 60 s when it runs alone: the module's 2-worker run, then the package's one-process baselines (this one the
    same global batch in one process: one worker accumulating both workers' micro-batches)."""
    two, one = log_losses(two_workers), one_process["zero3-1p"]
    assert sorted(two) == sorted(one) == list(range(1, 11))
    for step in two:
        assert abs(two[step] - one[step]) / one[step] <= 1e-4, (step, two[step], one[step])
    assert two[10] < two[1]
    # the checkpoint holds consolidated weights that load without DeepSpeed
    ckpt = two_workers / "checkpoint_00000010"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    assert not list(ckpt.glob("zero_pp_rank_*"))
    assert json.loads((ckpt / "manifest.json").read_text())["method"] == "full"
