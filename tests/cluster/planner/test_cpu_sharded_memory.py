"""The planner on the CPU cases of benchmarks/sharding_memory.py, against what 2 gloo workers were measured to hold.

The measured figures are the anonymous memory during the steps in benchmarks/results/sharding_memory.json (MiB per
worker, medians of 2 runs); the planner must be within 15% of each (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest

from cluster.planner import make_plan
from cluster.planner.memory import head_tile_bytes
from cluster.spec import validate_spec

MiB = 2**20
MEASURED = {"zero3-qlora": 750, "fsdp2-qlora": 600, "fsdp2-full": 1399}
CASES = {"zero3-qlora": ("qlora", "deepspeed_zero3"), "fsdp2-qlora": ("qlora", "fsdp2"), "fsdp2-full": ("full", "fsdp2")}


def _plan(name: str):
    """The benchmark's spec of one case (benchmarks/sharding_memory.py, spec_dict), planned."""
    method, sharding = CASES[name]
    spec = {
        "model": {"base": "embedded:smollm2-135m-instruct", "method": method, "dtype": "float32"},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256, "eval_split": 0.0},
        "train": {"max_steps": 4, "eval_steps": None, "micro_batch_size": 1, "gradient_checkpointing": True},
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1, "sharding": sharding},
        "output": {"name": "bench"},
    }
    if method != "full":
        spec["model"]["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0}
    return make_plan(validate_spec(spec))


@pytest.mark.parametrize("name", list(MEASURED))
def test_planner_is_within_15_percent_of_the_measured_workers(name):
    assert _plan(name).memory.allocated / MiB == pytest.approx(MEASURED[name], rel=0.15)


def test_the_terms_that_hold_what_the_qlora_workers_added():
    zero3, fsdp2, full = (_plan(name) for name in MEASURED)
    # TRL's chunked head without Triton: 8.25 float32 tiles of 256 tokens x 32,768 vocabulary entries
    assert head_tile_bytes(fsdp2.spec, fsdp2.config, 256) == int(8.25 * 256 * 32768 * 4)
    # ZeRO-3's one prefetch bucket holds the whole model (4-bit layers, float32 embedding, adapters), twice
    m = zero3.memory
    assert m.gather_buffers == pytest.approx(2 * 2 * (m.weights + m.lora_params), abs=4)
    # FSDP2 holds no gradients while the head's tiles exist (one micro-batch per step)
    assert (fsdp2.memory.overlap, full.memory.overlap) == (fsdp2.memory.gradients, full.memory.gradients)
