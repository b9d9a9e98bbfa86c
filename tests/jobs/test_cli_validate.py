"""`rayfit validate` through the installed console script: resolved spec, or problems and exit 2, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def rayfit(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("rayfit", path=str(Path(sys.executable).parent))
    assert exe, "the rayfit console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_validate_prints_the_resolved_spec():
    r = rayfit("validate", "jobs/specs/demo-cpu.yaml")
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    assert resolved["model"]["base"] == "embedded:smollm2-135m-instruct"
    assert resolved["train"]["optimizer"] == "adamw_torch"  # a default, filled in


def test_validate_lists_three_problems_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  base: embedded:smollm2-135m-instruct\n  method: qlora\n"
        "data:\n  train:\n    - path: embedded:construction-faq\n  packing: sometimes\n"
        "cluster:\n  sharding: zero3\n  wrokers: 2\noutput:\n  name: x\n"
    )
    r = rayfit("validate", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    problems = [line for line in r.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, r.stderr
    text = "\n".join(problems)
    assert "cluster.wrokers" in text and "data.packing" in text and "cluster.sharding" in text
