"""`python -m benchmarks.gpu --smoke`: the GPU benchmark's own code, on CPU at a tiny shape, so it never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_smoke_runs_every_case_and_prints_the_table(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out", str(out), "--work", str(tmp_path / "w")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case | shape | tokens/s | × baseline | MFU |" in proc.stdout
    cases = {c["name"]: c for c in json.loads(out.read_text())["cases"]}
    for method in ("lora", "qlora", "full"):
        for kind in ("baseline", "rayfit"):
            case = cases[f"{method}-{kind}"]
            assert case["tokens_per_s"] > 0 and case["loss_first"] > 0, case
        assert cases[f"{method}-rayfit"]["predicted_bytes"] > 0
    # The same tiny model and batches: a lever that runs on CPU starts from the plain step's loss.
    assert cases["lora-rayfit+fused-adamw"]["loss_first"] == pytest.approx(cases["lora-rayfit"]["loss_first"], abs=1e-5)
    # GPU-only levers are refused with the reason, not skipped silently.
    assert "liger-kernel needs a CUDA GPU and the liger-kernel package" in cases["lora-rayfit+liger"]["refused"]
    assert "flash_attention_2 needs a CUDA GPU and the flash-attn package" in cases["lora-rayfit+flash-attn"]["refused"]
    # QLoRA under ZeRO-3 and FSDP2 (the 4-bit base in float32 storage, loaded a layer at a time into a one-rank
    # process group) starts from the plain QLoRA step's loss, and the planner gives its figure for each.
    for sharded in ("qlora-rayfit+zero3", "qlora-rayfit+fsdp2"):
        case = cases[sharded]
        assert case["tokens_per_s"] > 0 and case["predicted_bytes"] > 0, case
        assert case["loss_first"] == pytest.approx(cases["qlora-rayfit"]["loss_first"], rel=1e-4), case
    merge = cases["qlora-merge"]
    assert merge["top1_agree"] == 1.0 and merge["max_abs_logit_diff"] < 0.02, merge
