"""GRPO on this machine: step time and tokens/s with answers sampled in the workers vs by a vLLM engine on Ray, and
the planner's memory against the measured peak RSS of each process.

    .venv/bin/python benchmarks/grpo_rollouts.py [--runs 2] [--steps 12]

The shipped spec (jobs/specs/grpo-cpu.yaml: SmolLM2-135M-Instruct, LoRA, 2 CPU workers, 4 answers of up to 16 tokens
per prompt, 8 answers per step) trained `--steps` steps through `cluster.training.trainer.fit` on a local Ray with 3
CPUs (2 workers and, for vLLM, the engine's one), once with `train.grpo.rollout: in_worker` and once with `vllm`,
alternating so that load on a shared machine hits both alike. Per run:
- step time: TRL's `step_time` (sampling, rewards, forward and backward of one optimizer step; the optimizer step
  itself is not in it), median over the steps after the first two;
- tokens/s: prompt and answer tokens of those steps (TRL's `num_tokens`) over the sum of their step times;
- peak RSS of each training worker and of the engine, sampled every 0.5 s with psutil (processes ray::RayTrainWorker,
  ray::RolloutEngine), against `rayfit plan`'s per-worker total and its `rollout_engine`.
Writes benchmarks/results/grpo_rollouts.json (tables `speed` and `memory`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
WARMUP_STEPS = 2
GiB = 1024**3


class PeakRss:
    """The highest RSS seen for each named Ray process kind, polled in a thread."""

    def __init__(self, titles: tuple[str, ...], every_s: float = 0.5):
        self.titles, self.every_s, self.peaks = titles, every_s, {t: 0 for t in titles}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        while not self.stop.is_set():
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                line = " ".join(proc.info["cmdline"] or [])
                for title in self.titles:
                    if line.startswith(f"ray::{title}") and proc.info["memory_info"] is not None:
                        self.peaks[title] = max(self.peaks[title], proc.info["memory_info"].rss)
            self.stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def spec_for(rollout: str, steps: int, storage: str) -> dict:
    """The shipped CPU spec with the rollout, the step count and the storage of this benchmark."""
    spec = yaml.safe_load((REPO / "jobs" / "specs" / "grpo-cpu.yaml").read_text())
    spec["train"]["grpo"]["rollout"] = rollout
    spec["train"].update(max_steps=steps, logging_steps=1, save_steps=1000)
    spec["output"] = {"storage": storage, "name": f"bench-{rollout}"}
    spec["merge"], spec["evaluate"] = {"enabled": False}, {"enabled": False}
    return spec


def one_run(rollout: str, steps: int, data_cache: str) -> dict:
    """Train once; the step times, tokens/s and peak RSS of the run."""
    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec
    from cluster.training.trainer import fit

    with tempfile.TemporaryDirectory(prefix="rayfit-grpo-rollouts-") as tmp:
        spec = validate_spec(spec_for(rollout, steps, tmp))
        data = prepare_datasets(spec, load_tokenizer(spec), data_cache)
        started = time.monotonic()
        with PeakRss(("RayTrainWorker", "RolloutEngine")) as rss:
            fit(spec, data.train_path, None)
        wall = time.monotonic() - started
        history = json.loads((Path(tmp) / f"bench-{rollout}" / "log_history.json").read_text())
    logged = [e for e in history if "step_time" in e]
    timed = [e for e in logged if e["step"] > WARMUP_STEPS]
    start_tokens = next(e["num_tokens"] for e in logged if e["step"] == WARMUP_STEPS)
    tokens = timed[-1]["num_tokens"] - start_tokens
    return {
        "rollout": rollout,
        "wall_s": round(wall, 1),
        "step_times_s": [round(e["step_time"], 3) for e in timed],
        "median_step_s": statistics.median(e["step_time"] for e in timed),
        "tokens_per_s": tokens / sum(e["step_time"] for e in timed),
        "rewards": [e["reward"] for e in logged],
        "peak_rss_worker_gib": rss.peaks["RayTrainWorker"] / GiB,
        "peak_rss_engine_gib": rss.peaks["RolloutEngine"] / GiB,
    }


def planned(rollout: str) -> tuple[float, float]:
    """`rayfit plan`'s per-worker total and rollout engine for the spec (GiB)."""
    from cluster.planner import make_plan
    from cluster.spec import validate_spec

    m = make_plan(validate_spec(spec_for(rollout, 12, "/tmp/unused"))).memory
    return m.total / GiB, m.rollout_engine / GiB


def main() -> None:
    import ray

    from benchmarks.results import table, write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs of each rollout, alternating")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", address="local")
    runs = []
    with tempfile.TemporaryDirectory(prefix="rayfit-grpo-data-") as cache:
        for _ in range(args.runs):
            for rollout in ("in_worker", "vllm"):
                runs.append(one_run(rollout, args.steps, cache))
                print(f"{rollout}: median step {runs[-1]['median_step_s']:.2f} s, {runs[-1]['tokens_per_s']:.0f} tok/s")
    ray.shutdown()

    def median(rollout: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["rollout"] == rollout)

    summary = {
        r: {k: median(r, k) for k in ("median_step_s", "tokens_per_s", "peak_rss_worker_gib", "peak_rss_engine_gib")}
        for r in ("in_worker", "vllm")
    }
    summary["vllm_over_in_worker_step_time"] = summary["vllm"]["median_step_s"] / summary["in_worker"]["median_step_s"]
    speed = [
        [r, f"{summary[r]['median_step_s']:.2f}", f"{summary[r]['tokens_per_s']:.0f}", str(sum(x["rollout"] == r for x in runs))]
        for r in ("in_worker", "vllm")
    ]
    memory = []
    for r in ("in_worker", "vllm"):
        worker_plan, engine_plan = planned(r)
        summary[r] |= {"planned_worker_gib": worker_plan, "planned_engine_gib": engine_plan}
        memory.append([r, "training worker", f"{worker_plan:.2f}", f"{summary[r]['peak_rss_worker_gib']:.2f}"])
        if r == "vllm":
            memory.append([r, "vLLM engine", f"{engine_plan:.2f}", f"{summary[r]['peak_rss_engine_gib']:.2f}"])
    write_results(
        "grpo_rollouts",
        runs=runs,
        summary=summary,
        tables={
            "speed": table(["rollout", "step time (s, median)", "tokens/s", "runs"], speed),
            "memory": table(["rollout", "process", "planned (GiB)", "peak RSS (GiB, median)"], memory),
        },
        command=f"python benchmarks/grpo_rollouts.py --runs {args.runs} --steps {args.steps}",
    )


if __name__ == "__main__":
    main()
