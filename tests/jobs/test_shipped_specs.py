"""Every shipped example spec loads, and its header gives the exact ray job submit command for itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "jobs" / "specs").glob("*.yaml"))


def test_the_four_promised_specs_ship():
    names = {p.name for p in SPECS}
    assert {"demo-cpu.yaml", "llama-3.1-8b-lora.yaml", "llama-3.1-70b-qlora.yaml", "llama-3.1-70b-full-zero3.yaml"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_loads_and_documents_its_submit_command(path):
    spec = load_spec(path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"-- python -m jobs.finetune jobs/specs/{path.name}" in header
    assert "ray job submit" in header and "--working-dir ." in header
    assert spec.model.trust_remote_code is False


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_the_resolved_spec_that_validate_prints_validates_again(path, tmp_path, capsys):
    from jobs.cli import main

    assert main(["validate", str(path)]) == 0
    printed = tmp_path / "resolved.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_spec(printed) == load_spec(path)
    assert main(["validate", str(printed)]) == 0


# The fleets the shipped 70B specs are written for, and what `rayfit plan` gives for each (GiB per GPU, as printed).
PLANNED = [
    # 8 x A10G: ZeRO-3 partitions the 4-bit base
    ("llama-3.1-70b-qlora-a10g.yaml", "A10G-24GB", 8, {"weights": 4.6, "activations": 8.3, "total": 19.0, "host_offload": 0.0}),
    # 2 x L40S: FSDP2 halves the 4-bit base
    ("llama-3.1-70b-qlora-l40s.yaml", "L40S-48GB", 2, {"weights": 18.4, "activations": 8.3, "total": 33.9, "host_offload": 0.0}),
    # 4 x H100: QLoRA with ZeRO-3 (54.5 GiB per GPU without it)
    ("llama-3.1-70b-qlora.yaml", "H100-80GB", 4, {"weights": 9.2, "activations": 8.3, "total": 24.3, "host_offload": 0.0}),
    # 24 x H100: full fine-tune with ZeRO-3
    ("llama-3.1-70b-full-zero3.yaml", "H100-80GB", 24, {"weights": 5.5, "optimizer": 32.9, "total": 63.0, "host_offload": 0.0}),
]


@pytest.mark.parametrize(("name", "gpu", "gpus", "expected"), PLANNED, ids=[p[0] for p in PLANNED])
def test_each_70b_spec_plans_as_fitting_its_fleet(name, gpu, gpus, expected):
    from cluster.planner import check_fit, make_plan
    from cluster.planner.gpus import GiB

    spec = load_spec(Path(__file__).resolve().parents[2] / "jobs" / "specs" / name)
    plan = make_plan(spec)  # the GPU comes from the spec's cluster.accelerator_type
    assert (plan.gpu.name, plan.num_gpus, plan.fits) == (gpu, gpus, True)
    got = plan.memory.to_json()
    assert {k: round(got[k] / GiB, 1) for k in expected} == expected
    check_fit(plan, spec)  # also within plan.host_ram_per_worker_gib where the spec sets it


def test_the_a10g_spec_uses_the_levers_the_planner_names_for_it():
    from cluster.planner import make_plan, suggest_changes
    from cluster.planner.plan import with_changes

    spec = load_spec(Path(__file__).resolve().parents[2] / "jobs" / "specs" / "llama-3.1-70b-qlora-a10g.yaml")
    assert spec.cluster.sharding == "deepspeed_zero3" and spec.cluster.num_workers == 8
    assert spec.train.gradient_checkpointing and spec.train.micro_batch_size == 1
    # without ZeRO-3 it does not fit an A10G, and the planner's cheapest fix is exactly ZeRO-3, on the same 8 GPUs
    plain = make_plan(with_changes(spec, {"cluster": {"sharding": "ddp"}}))
    assert plain.fits is False and round(plain.memory.total / 2**30, 1) == 54.5
    first = suggest_changes(plain)[0]
    assert first.changes == {"cluster": {"sharding": "deepspeed_zero3"}} and round(first.total / 2**30, 1) == 19.0


def test_the_grpo_specs_ship_and_the_gpu_one_is_planned_to_fit():
    from cluster.planner import check_fit, make_plan

    root = Path(__file__).resolve().parents[2] / "jobs" / "specs"
    cpu = load_spec(root / "grpo-cpu.yaml")
    assert cpu.model.base == "embedded:smollm2-135m-instruct" and cpu.train.objective == "grpo"
    assert cpu.evaluate.gate_metric == "reward" and (root / "data" / "addition.jsonl").is_file()
    gpu = load_spec(root / "grpo-llama-3.1-8b.yaml")
    plan = make_plan(gpu, gpu="H100-80GB")
    assert gpu.train.grpo.rollout == "vllm" and plan.memory.rollout_engine > 0 and plan.fits
    check_fit(plan, gpu)  # nothing to refuse: 4 training GPUs and the engine's own each hold their share
