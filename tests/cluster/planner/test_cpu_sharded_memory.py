"""The planner on the CPU cases of benchmarks/sharding_memory.py, against what 2 gloo workers were measured to hold.

The measured figures are the anonymous memory during the steps in benchmarks/results/sharding_memory.json (per
worker, medians of 2 runs), read from that file; the planner must be within 15% of each (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest

from benchmarks.results import read_results
from benchmarks.sharding_memory import CASES, spec_dict
from cluster.planner import make_plan
from cluster.planner.memory import head_tile_bytes
from cluster.spec import validate_spec

MEASURED = {
    name: case["steps_anon_bytes"]
    for name, case in read_results("sharding_memory")["summary"].items()
    if isinstance(case, dict) and "steps_anon_bytes" in case
}


def _plan(name: str):
    """The benchmark's own spec of one case, planned."""
    method, sharding = next((m, s) for n, m, s in CASES if n == name)
    model = read_results("sharding_memory")["summary"]["model"]
    return make_plan(validate_spec(spec_dict(model, method, sharding, "embedded:construction-faq", "/tmp/bench", 4)))


def test_every_case_of_the_benchmark_was_measured():
    assert sorted(MEASURED) == sorted(name for name, _, _ in CASES)


@pytest.mark.parametrize("name", [name for name, _, _ in CASES])
def test_planner_is_within_15_percent_of_the_measured_workers(name):
    assert _plan(name).memory.allocated == pytest.approx(MEASURED[name], rel=0.15)


def test_the_terms_that_hold_what_the_qlora_workers_added():
    zero3, fsdp2, full = (_plan(name) for name in ("zero3-qlora", "fsdp2-qlora", "fsdp2-full"))
    # TRL's chunked head without Triton: 8.25 float32 tiles of 256 tokens x 32,768 vocabulary entries
    assert head_tile_bytes(fsdp2.spec, fsdp2.config, 256) == int(8.25 * 256 * 32768 * 4)
    # ZeRO-3's one prefetch bucket holds the whole model (4-bit layers, float32 embedding, adapters), twice
    m = zero3.memory
    assert m.gather_buffers == pytest.approx(2 * 2 * (m.weights + m.lora_params), abs=4)
    # FSDP2 holds no gradients while the head's tiles exist (one micro-batch per step)
    assert (fsdp2.memory.overlap, full.memory.overlap) == (fsdp2.memory.gradients, full.memory.gradients)
