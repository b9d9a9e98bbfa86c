"""QLoRA under ZeRO-3: the 4-bit base is partitioned as it loads, and 2 workers train like one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.spec import validate_spec
from tests.cluster.training.conftest import tiny_spec

pytestmark = pytest.mark.slow


def _storage_probe(config: dict) -> None:
    """On each worker: load the QLoRA model (ZeRO-3 config live, or none) and record the bytes of the 4-bit storage
    this rank holds, and of all its parameters."""
    import bitsandbytes as bnb
    import ray.train

    from cluster.model.load import load_model
    from cluster.training.deepspeed_config import deepspeed_config
    from cluster.training.loop import _init_deepspeed_comm

    spec = validate_spec(config["spec"])
    ctx = ray.train.get_context()
    _init_deepspeed_comm(on_gpu=False)
    ds = deepspeed_config(spec, ctx.get_world_size(), on_gpu=False)
    model = load_model(spec, ds)

    def held(p) -> int:
        local = getattr(p, "ds_tensor", p)  # under ZeRO-3 the module's tensor is an empty placeholder
        return local.numel() * local.element_size()

    four_bit = [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    out = {"four_bit": sum(held(p) for p in four_bit), "all": sum(held(p) for p in model.parameters()), "n4": len(four_bit)}
    Path(config["out"], f"rank{ctx.get_world_rank()}-{config['tag']}.json").write_text(json.dumps(out))
    ray.train.report({})


def _probe(spec: dict, tmp_path: Path, tag: str, workers: int) -> list[dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(
        _storage_probe,
        train_loop_config={"spec": spec, "out": str(tmp_path), "tag": tag},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path), name=f"probe-{tag}"),
    ).fit()
    return [json.loads((tmp_path / f"rank{r}-{tag}.json").read_text()) for r in range(workers)]


def test_each_rank_holds_half_of_the_4bit_storage(ray_local, tiny_model_dir, tmp_path):
    qlora = {"method": "qlora", "dtype": "float32", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    sharded = tiny_spec(tiny_model_dir, tmp_path, "probe", model=qlora, cluster={"deepspeed": "zero3"})
    whole = tiny_spec(tiny_model_dir, tmp_path, "probe", model=qlora, cluster={"num_workers": 1})
    (one,) = _probe(whole, tmp_path, "1p", 1)
    ranks = _probe(sharded, tmp_path, "zero3", 2)
    assert one["n4"] == ranks[0]["n4"] > 0
    for rank in ranks:
        # ZeRO-3 pads each flattened weight to a multiple of the world size: within 1% of exactly half
        assert rank["four_bit"] == pytest.approx(one["four_bit"] / 2, rel=0.01), (rank, one)
        assert rank["all"] == pytest.approx(one["all"] / 2, rel=0.01), (rank, one)
