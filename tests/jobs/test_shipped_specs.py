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
