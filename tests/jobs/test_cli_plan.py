"""`rayfit plan`: a table for people, JSON for machines, exit 1 with the smallest fix when the spec does not fit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.spec import load_spec
from jobs.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_refusal_through_the_console_script():
    exe = shutil.which("rayfit", path=str(Path(sys.executable).parent))
    r = subprocess.run(
        [exe, "plan", "jobs/specs/llama-3.1-70b-full-zero3.yaml", "--gpus", "8", "--no-data"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "DOES NOT FIT" in r.stdout and "optimizer states" in r.stdout
    (refusal,) = [line for line in r.stderr.splitlines() if line.startswith("rayfit: plan:")]
    assert "8 x H100-80GB needs" in refusal and "Fix: cluster.num_workers:" in refusal


def test_json_with_gpu_count_price_and_tokens(capsys):
    rc = main(
        [
            "plan",
            "jobs/specs/llama-3.1-70b-qlora.yaml",
            "--gpu",
            "A100-80GB",
            "--gpus",
            "2",
            "--price-per-gpu-hour",
            "1.5",
            "--dataset-tokens",
            "20000000",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["fits"] is True and out["suggestions"] == []
    assert out["gpu"]["name"] == "A100-80GB" and out["num_gpus"] == 2
    assert out["params"]["total"] == 70_553_706_496 and out["params"]["trainable"] == 207_093_760
    t = out["throughput"]
    assert t["train_tokens"] == 40_000_000  # 2 epochs
    assert t["cost"] == pytest.approx(t["wall_time_s"] / 3600 * 2 * 1.5)


def test_table_on_the_cpu_demo_counts_tokens_from_max_steps(capsys):
    assert main(["plan", "jobs/specs/demo-cpu.yaml"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008 total" in out  # SmolLM2-135M, tied embeddings counted once
    assert "memory per worker (RAM)" in out and "no GPU to check against" in out
    s = load_spec(REPO / "jobs/specs/demo-cpu.yaml")
    steps = s.train.max_steps * s.train.micro_batch_size * s.train.gradient_accumulation_steps * s.cluster.num_workers
    assert f"train tokens {steps * s.data.max_seq_len:,}" in out  # every packed row is full


def test_unknown_gpu_is_one_line(capsys):
    assert main(["plan", "jobs/specs/demo-cpu.yaml", "--gpu", "H900"]) == 1
    assert capsys.readouterr().err.startswith("rayfit: unknown GPU 'H900'. Fix: use one of H100-80GB")


def test_offload_beyond_the_host_ram_is_one_named_line(tmp_path, capsys):
    spec = tmp_path / "a10g-8k.yaml"
    spec.write_text(
        (REPO / "jobs" / "specs" / "llama-3.1-70b-qlora-a10g.yaml")
        .read_text()
        .replace("max_seq_len: 4096", "max_seq_len: 8192")
        .replace("  gradient_checkpointing: true\n", "  gradient_checkpointing: true\n  activation_offloading: true\n")
        .replace("host_ram_per_worker_gib: 88 ", "host_ram_per_worker_gib: 8 ")
    )
    assert main(["plan", str(spec), "--no-data"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayfit: plan: train.activation_offloading needs 12.2 GiB of host RAM per worker"), err
    assert "plan.host_ram_per_worker_gib is 8, 4.2 GiB short" in err and "Traceback" not in err
