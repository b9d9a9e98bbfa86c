"""Secrets in the environment never reach anything a job writes: its run folder, Ray's session logs, or its own log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# Fake values shaped like the real thing; each is unique enough that finding it anywhere means it leaked.
SECRETS = {
    "HF_TOKEN": "hf_FAKEfakeFAKE1234567890leakcheck",
    "AWS_SECRET_ACCESS_KEY": "FAKEawsSECRETkey/0123456789+leakcheck",
    "OPENAI_API_KEY": "sk-FAKEopenaiKEY0123456789leakcheck",
    "RAYFIT_API_KEY": "rf-FAKEtenantKEY0123456789leakcheck",
    "MLFLOW_TRACKING_TOKEN": "mlflowFAKEtoken0123456789leakcheck",
}


def files_holding(root: Path, needles: dict[str, bytes]) -> list[str]:
    """'path: NAME' for every file under `root` that contains a needle's value (read in full: these runs are small)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:  # sockets and files Ray removes while we read
                continue
            hits += [f"{path}: {name}" for name, value in needles.items() if value in data]
    return hits


def test_the_search_finds_a_planted_value(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "log.txt").write_bytes(b"...token=" + SECRETS["HF_TOKEN"].encode() + b"\n")
    assert files_holding(tmp_path, {"HF_TOKEN": SECRETS["HF_TOKEN"].encode()}) == [f"{tmp_path}/a/b/log.txt: HF_TOKEN"]


@pytest.mark.slow
def test_a_job_writes_no_secret_anywhere(tiny_model_dir, tmp_path):
    spec = {
        "model": {"base": str(tiny_model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
        "data": {"train": [{"path": "embedded:construction-faq"}], "eval_split": 0.05, "max_seq_len": 256},
        "train": {
            "max_steps": 2,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": 2,
            "save_steps": 2,
        },
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "output": {"storage": str(tmp_path / "runs"), "name": "secrets"},
        "merge": {"enabled": True},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rfs-"))  # short: Ray's socket paths must stay under 107 characters
    env = {
        **os.environ,
        **SECRETS,
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.finetune", str(path), "--address", "local"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]).decode(errors="replace")
        run = tmp_path / "runs" / "secrets"
        assert (run / "run.json").is_file() and (run / "export" / "manifest.json").is_file()  # it wrote what it should
        needles = {name: value.encode() for name, value in SECRETS.items()}
        leaks = files_holding(tmp_path, needles) + files_holding(ray_tmp, needles)
        leaks += [f"job log: {name}" for name, value in needles.items() if value in proc.stdout + proc.stderr]
        assert not leaks, leaks
        assert list(ray_tmp.rglob("*.log")) or list(ray_tmp.rglob("*.out")), "Ray's session logs were not searched"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
