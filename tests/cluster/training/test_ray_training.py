"""LoRA and QLoRA on 2 Ray Train workers, fault injection with resume, and resubmission of a finished run (the LoRA run
is the package's `lora_run`, which test_dpo_runs warm-starts from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.manifest import read_manifest, verify
from cluster.spec import validate_spec
from cluster.training.trainer import fit
from tests.cluster.training.conftest import eval_losses, log_losses, tiny_spec

pytestmark = pytest.mark.slow

ADAPTER_FILES = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "chat_template.jinja",
    "optimizer.pt",
    "rng_state_0.pth",
    "rng_state_1.pth",
    "scheduler.pt",
    "tokenizer.json",
    "tokenizer_config.json",
    "trainer_state.json",
    "training_args.bin",
}


def _fit(spec: dict, data: dict, env: dict | None = None):
    return fit(validate_spec(spec), data["train_path"], data["eval_path"], extra_env=env)


def _assert_adapter_checkpoint(folder: Path, spec: dict, step: int, method: str):
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == ADAPTER_FILES | {"manifest.json"}
    manifest = read_manifest(str(folder))
    assert manifest["kind"] == "checkpoint" and manifest["method"] == method and manifest["step"] == step
    assert manifest["base_model"] == spec["model"]["base"] and manifest["dtype"] == "float32"
    assert validate_spec(manifest["spec"]) == validate_spec(spec)
    assert manifest["adapter_config"]["r"] == 8 and manifest["adapter_config"]["lora_alpha"] == 16
    assert set(manifest["files"]) == ADAPTER_FILES
    assert manifest["metrics"]["step"] == step and manifest["metrics"]["eval_loss"] > 0
    assert verify(folder) == []
    return manifest


def test_lora_on_two_workers(lora_run):
    spec, run, result = lora_run
    assert sorted(p.name for p in run.glob("checkpoint_*") if p.is_dir()) == ["checkpoint_00000005", "checkpoint_00000010"]
    manifest = _assert_adapter_checkpoint(run / "checkpoint_00000010", spec, 10, "lora")
    assert "quantization" not in manifest
    losses = log_losses(run)
    assert sorted(losses) == list(range(1, 11))
    assert sum(list(losses.values())[-3:]) < sum(list(losses.values())[:3])
    evals = eval_losses(run)
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2]  # at the start, step 5 and step 10
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(result.checkpoint.path).name == "checkpoint_00000010"


def test_qlora_on_two_workers(ray_local, tiny_model_dir, tiny_data, tmp_path):
    spec = tiny_spec(tiny_model_dir, tmp_path, "qlora", model={"method": "qlora"}, cluster={"max_failures": 0})
    _fit(spec, tiny_data)
    manifest = _assert_adapter_checkpoint(tmp_path / "qlora" / "checkpoint_00000010", spec, 10, "qlora")
    assert manifest["quantization"] == {
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "bfloat16",
        "storage_dtype": None,  # uint8 without ZeRO-3 (cluster.model.load.bnb_config)
    }
    evals = eval_losses(tmp_path / "qlora")
    assert evals[-1] < evals[0]


def test_worker_failure_resumes_from_last_checkpoint(lora_run, tiny_data, tmp_path):
    """Over 60 s: one fit that starts its worker group twice (the injected failure, then the restart)."""
    spec, reference, _ = lora_run
    spec = {**spec, "output": {"storage": str(tmp_path), "name": "faulty"}}
    _fit(spec, tiny_data, env={"RAYFIT_FAIL_AT_STEP": "7"})
    run = tmp_path / "faulty"
    assert (run / ".fault-injected-at-step-7").is_file()
    # the second attempt restored step 5 (trainer state in the checkpoint) and trained steps 6..10 again
    resumed = json.loads((run / "checkpoint_00000010" / "trainer_state.json").read_text())
    assert resumed["global_step"] == 10
    final, expected = log_losses(run)[10], log_losses(reference)[10]
    assert abs(final - expected) / expected <= 0.01
    _assert_adapter_checkpoint(run / "checkpoint_00000010", spec, 10, "lora")


def test_resubmitting_a_finished_run_resumes_and_skips_incomplete(lora_run, tiny_data):
    spec, run, _ = lora_run
    before = (run / "checkpoint_00000010" / "manifest.json").read_text()
    (run / "checkpoint_00000099").mkdir()  # a save interrupted before its manifest: must never be used
    (run / "checkpoint_00000099" / "adapter_model.safetensors").write_bytes(b"partial")
    _fit(spec, tiny_data)
    # resumed at step 10 of 10: nothing trained, nothing rewritten; the interrupted save past it is cleared away
    assert (run / "checkpoint_00000010" / "manifest.json").read_text() == before
    assert not (run / "checkpoint_00000099").exists()
    history = json.loads((run / "log_history.json").read_text())
    assert max(e["step"] for e in history) == 10
