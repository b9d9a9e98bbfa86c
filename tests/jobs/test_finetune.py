"""`python -m jobs.finetune SPEC`: the whole job on the tiny model, and user errors as one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from cluster.spec import load_spec
from tests.conftest import private_ray
from tests.jobs.test_secrets import SECRETS, files_holding

REPO = Path(__file__).resolve().parents[2]


def _run(spec_path: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """`python -m jobs.finetune SPEC --address local` (a private local Ray) as a user runs it, with `env` added."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **env}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs.finetune", str(spec_path), "--address", "local"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def e2e(tiny_model_dir, tmp_path_factory):
    """ONE whole job for this module's end-to-end tests: train, merge, evaluate every held-out row (a vLLM engine on
    the job's 2-CPU local Ray, then the loss task), with fake secrets in its environment and Ray's session folder kept
    apart, so that the same run is also searched for leaks. About 50 s of job plus the engine's start: 90-210 s on a
    busy 2-core box. Yields (the finished process, its run folder, the module's folder, Ray's session folder)."""
    tmp = tmp_path_factory.mktemp("e2e")
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
        "output": {"storage": str(tmp / "runs"), "name": "job"},
        "merge": {"enabled": True},
        "evaluate": {"enabled": True, "max_new_tokens": 2, "enforce_eager": True},  # every held-out row, as the demo
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rfs-"))  # short: Ray's socket paths must stay under 107 characters
    try:
        yield _run(path, timeout=900, **SECRETS, RAY_TMPDIR=str(ray_tmp)), tmp / "runs" / "job", tmp, ray_tmp
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_finetune_job_end_to_end(e2e):
    """The job's whole path, on the module's one run (`e2e`: over 60 s, see there)."""
    proc, run, _, _ = e2e
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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


@pytest.mark.slow
def test_the_job_writes_no_secret_anywhere(e2e):
    """Secrets in the job's environment reach none of its files (run folder, export, evaluation), Ray's session logs
    or its own output: the module's one run (`e2e`), searched in full."""
    proc, run, tmp, ray_tmp = e2e
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "run.json").is_file() and (run / "export" / "manifest.json").is_file()  # it wrote what it should
    needles = {name: value.encode() for name, value in SECRETS.items()}
    leaks = files_holding(tmp, needles) + files_holding(ray_tmp, needles)
    leaks += [f"job log: {name}" for name, value in needles.items() if value in (proc.stdout + proc.stderr).encode()]
    assert not leaks, leaks
    assert list(ray_tmp.rglob("*.log")) or list(ray_tmp.rglob("*.out")), "Ray's session logs were not searched"


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
