"""ZeRO-3: weights are partitioned as they load, and 2 workers train exactly like one process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cluster.spec import validate_spec
from cluster.training.trainer import fit, loop_config
from tests.cluster.training.conftest import log_losses, run_single_process, tiny_spec

pytestmark = pytest.mark.slow


def _partition_probe(config: dict) -> None:
    """On each worker: load under the ZeRO-3 config and record every parameter's full and local sizes."""
    import ray.train

    from cluster.model.load import load_model
    from cluster.training.deepspeed_config import deepspeed_config
    from cluster.training.loop import _init_deepspeed_comm

    spec = validate_spec(config["spec"])
    ctx = ray.train.get_context()
    _init_deepspeed_comm(on_gpu=False)
    model = load_model(spec, deepspeed_config(spec, ctx.get_world_size(), on_gpu=False))
    sizes = {n: [p.ds_numel, p.ds_tensor.numel(), p.numel()] for n, p in model.named_parameters()}
    Path(config["out"], f"rank{ctx.get_world_rank()}.json").write_text(json.dumps(sizes))
    ray.train.report({})


def test_parameters_are_partitioned_at_load(ray_local, tiny_model_dir, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from safetensors import safe_open

    spec = tiny_spec(
        tiny_model_dir, tmp_path, "probe", model={"method": "full", "lora": None}, cluster={"sharding": "deepspeed_zero3"}
    )
    del spec["model"]["lora"]
    TorchTrainer(
        _partition_probe,
        train_loop_config={"spec": spec, "out": str(tmp_path)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path), name="probe"),
    ).fit()
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        on_disk = {k: math.prod(f.get_slice(k).get_shape()) for k in f.keys()}
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert sum(full for full, _, _ in ranks[0].values()) == sum(on_disk.values())
    for name, (full, local, materialised) in ranks[0].items():
        assert materialised == 0, f"{name} is whole on rank 0"  # the module holds an empty placeholder
        assert local == math.ceil(full / 2), f"{name}: rank 0 holds {local} of {full} elements"


def test_two_workers_match_one_process(ray_local, tiny_model_dir, tiny_data, tmp_path):
    spec = tiny_spec(
        tiny_model_dir,
        tmp_path,
        "zero3-2w",
        model={"method": "full"},
        cluster={"sharding": "deepspeed_zero3"},
        train={"eval_steps": None, "save_steps": 10, "learning_rate": 3e-4},
    )
    del spec["model"]["lora"]
    fit(validate_spec(spec), tiny_data["train_path"], None)

    # the same global batch in one process without Ray: one worker accumulating both workers' micro-batches
    single = {
        **spec,
        "cluster": {**spec["cluster"], "num_workers": 1},
        "train": {**spec["train"], "gradient_accumulation_steps": 2},
        "output": {"storage": str(tmp_path), "name": "zero3-1p"},
    }
    run_single_process(loop_config(validate_spec(single), tiny_data["train_path"], None), tmp_path)

    two, one = log_losses(tmp_path / "zero3-2w"), log_losses(tmp_path / "zero3-1p")
    assert sorted(two) == sorted(one) == list(range(1, 11))
    for step in two:
        assert abs(two[step] - one[step]) / one[step] <= 1e-4, (step, two[step], one[step])
    assert two[10] < two[1]
    # the checkpoint holds consolidated weights that load without DeepSpeed
    ckpt = tmp_path / "zero3-2w" / "checkpoint_00000010"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    assert not list(ckpt.glob("zero_pp_rank_*"))
    assert json.loads((ckpt / "manifest.json").read_text())["method"] == "full"
