"""The shipped GRPO spec on this machine: held-out reward and pass rate, base vs tuned, through the finetune job.

    .venv/bin/python benchmarks/grpo_cpu.py

Runs `python -m jobs.finetune jobs/specs/grpo-cpu.yaml --address local` (a local Ray, 2 CPU workers, the embedded
SmolLM2-135M-Instruct) with output.storage in a temporary folder and nothing else changed, then reads the run's
eval/report.json (greedy answers to the 48 held-out prompts, scored by the spec's graders) and log_history.json.
Writes benchmarks/results/grpo_cpu.json: table `heldout` (base, tuned, 95% bootstrap interval of tuned - base),
the training reward of the first and last 15 steps, and the job's wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SPEC = REPO / "jobs" / "specs" / "grpo-cpu.yaml"


def main() -> None:
    from benchmarks.results import table, write_results

    with tempfile.TemporaryDirectory(prefix="rayfit-grpo-bench-") as tmp:
        spec = yaml.safe_load(SPEC.read_text())
        spec["output"]["storage"] = tmp
        path = Path(tmp) / "grpo-cpu.yaml"
        path.write_text(yaml.safe_dump(spec))
        started = time.monotonic()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
        job = subprocess.run(
            [sys.executable, "-m", "jobs.finetune", str(path), "--address", "local"], cwd=REPO, env=env, text=True
        )
        wall = time.monotonic() - started
        if job.returncode != 0:
            sys.exit(f"the finetune job failed (exit {job.returncode})")
        run = Path(tmp) / spec["output"]["name"]
        report = json.loads((run / "eval" / "report.json").read_text())
        history = json.loads((run / "log_history.json").read_text())
    rewards = [e["reward"] for e in history if "reward" in e]
    base, tuned, spans = report["base"], report["tuned"], report["intervals"]
    keys = ["reward", *[f"reward_{g}" for g in report["graders"]], "pass_rate"]
    rows = [[k, f"{base[k]:.3f}", f"{tuned[k]:.3f}", "[{:+.3f}, {:+.3f}]".format(*spans[k]["difference"])] for k in keys]
    run_record = {
        "wall_s": round(wall, 1),
        "steps": spec["train"]["max_steps"],
        "held_out_prompts": report["eval_rows"],
        "base": {k: base[k] for k in keys},
        "tuned": {k: tuned[k] for k in keys},
        "intervals": {k: spans[k] for k in keys},
        "train_reward_by_logged_step": rewards,
        "samples": report["samples"],
    }
    first, last = sum(rewards[:3]) / len(rewards[:3]), sum(rewards[-3:]) / len(rewards[-3:])  # 15 steps each
    write_results(
        "grpo_cpu",
        runs=[run_record],
        summary={
            "base_reward": base["reward"],
            "tuned_reward": tuned["reward"],
            "base_pass_rate": base["pass_rate"],
            "tuned_pass_rate": tuned["pass_rate"],
            "train_reward_first_15_steps": first,
            "train_reward_last_15_steps": last,
            "wall_s": round(wall, 1),
        },
        tables={"heldout": table(["metric", "base", "tuned", "tuned - base (95% interval)"], rows)},
        command="python benchmarks/grpo_cpu.py",
        notes="One run of jobs/specs/grpo-cpu.yaml as shipped (2 CPU workers, LoRA, 60 steps); wall time includes "
        "Ray's start, data preparation, training, the merge and the evaluation of both models.",
    )


if __name__ == "__main__":
    main()
