"""`python -m jobs.finetune SPEC`: the whole job on the tiny model, and user errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.spec import load_spec
from tests.conftest import private_ray

REPO = Path(__file__).resolve().parents[2]


def _run(spec_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs.finetune", str(spec_path), "--address", "local"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_finetune_job_end_to_end(tiny_model_dir, tmp_path):
    """Train, merge, evaluate every held-out row (a vLLM engine on the job's 2-CPU local Ray, then the loss task):
    about 50 s of job plus the engine's start: 90-210 s on a busy 2-core box."""
    spec = {
        "model": {"base": str(tiny_model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 8, "alpha": 16}},
        "data": {"train": [{"path": "embedded:construction-faq"}], "eval_split": 0.05, "max_seq_len": 256},
        "train": {
            "max_steps": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": 2,
            "save_steps": 2,
            "keep_checkpoints": 1,
        },
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "output": {"storage": str(tmp_path / "runs"), "name": "job"},
        "merge": {"enabled": True},
        "evaluate": {"enabled": True, "max_new_tokens": 2, "enforce_eager": True},  # every held-out row, as the demo
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = _run(path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "job"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["name"] == "job"
    # keep_checkpoints: 1 leaves only the newest (Ray keeps the latest for resume), which is then the best
    assert [Path(c["uri"]).name for c in record["checkpoints"]] == ["checkpoint_00000004"]
    assert record["best_checkpoint"] == record["latest_checkpoint"] == str(run / "checkpoint_00000004")
    assert record["metrics"]["step"] == 4 and "eval_loss" in record["metrics"]
    assert json.loads((Path(record["export"]) / "manifest.json").read_text())["kind"] == "export"
    assert (run / "data_report.json").is_file()
    evaluation = json.loads((run / "eval" / "report.json").read_text())
    held_out = json.loads((run / "data_report.json").read_text())["eval_samples"]
    assert evaluation["generation_samples"] == evaluation["eval_samples"] == held_out > 20  # every held-out row
    assert evaluation["generation"]["how"] == "one engine: base, and base + adapter"  # vLLM, then the loss task
    assert "exact_match" in evaluation["intervals"]
    # the demo (jobs/specs/demo-cpu.yaml, also the service demo's template) evaluates the same way: every held-out row
    assert load_spec(REPO / "jobs" / "specs" / "demo-cpu.yaml").evaluate.max_samples is None
    assert (run / "loss.png").is_file() and list((run / "data").iterdir())
    assert "rayfit: plan:" in proc.stdout


def test_spec_errors_are_one_message_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  base: org/model\n  methd: lora\ndata:\n  train: [{path: x.jsonl}]\noutput:\n  name: r\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.finetune", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "model.methd (line 3): unknown key 'methd'. Fix: did you mean 'method'?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_merge_no_node_can_hold_is_refused_before_training(tiny_model_dir, tmp_path, monkeypatch):
    """A Ray cluster whose only node offers 0.5 GiB of memory: the merge and evaluate tasks and evaluation's vLLM engine
    can never run there, so the job stops after planning, with the numbers, and no training step is taken."""
    import ray

    from cluster.errors import UserError
    from cluster.spec import validate_spec
    from jobs.finetune import finetune

    spec = validate_spec(
        {
            "model": {"base": str(tiny_model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 8, "alpha": 16}},
            "data": {"train": [{"path": "embedded:construction-faq"}], "eval_split": 0.05, "max_seq_len": 256},
            "train": {"max_steps": 2},
            "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
            "output": {"storage": str(tmp_path / "runs"), "name": "job"},
            "merge": {"enabled": True},
            "evaluate": {"enabled": True},
        }
    )
    private_ray(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        _memory=512 * 1024**2,
        _node_ip_address="127.0.0.1",
    )
    try:
        with pytest.raises(UserError) as e:
            finetune(spec)
    finally:
        ray.shutdown()
    msg = str(e.value)
    assert "plan: the merge task needs 1 CPU, 1.0 GiB host RAM (streaming" in msg
    assert "but the largest node with 1 CPU has 0.5 GiB of Ray memory (1 alive node)" in msg
    assert "plan: the evaluate task needs 1 CPU" in msg and "set merge.enabled: false" in msg
    assert "plan: an evaluation engine replica needs 1 CPU" in msg and "evaluate.max_samples: 0" in msg
    run = tmp_path / "runs" / "job"
    assert not list(run.glob("checkpoint_*")) and not (run / "log_history.json").exists()  # never trained
