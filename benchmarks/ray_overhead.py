"""Ray Train's overhead: tokens/s of the same tiny-model training loop in one process and under Ray with 1 worker.

    .venv/bin/python -m benchmarks.ray_overhead [--runs 3] [--steps 30]

Writes benchmarks/results/ray_overhead.json (table `overhead`, which docs/benchmarks.md quotes): loop tokens/s
(tokens over the Trainer's own train_runtime) and end-to-end wall time
(model load, Trainer setup and the checkpoint included, plus Ray's worker start for the Ray case); median of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _spec(model_dir: Path, storage: Path, name: str, steps: int) -> dict:
    return {
        "model": {"base": str(model_dir), "method": "full", "dtype": "float32"},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256},
        "train": {
            "max_steps": steps,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": steps,
            "eval_steps": None,
            "save_steps": steps,
        },
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 2},
        "output": {"storage": str(storage), "name": name},
    }


def _loop_rate(run: Path) -> float:
    history = json.loads((run / "log_history.json").read_text())
    end = history[-1]
    return end["num_input_tokens_seen"] / end["train_runtime"]


def main() -> None:
    """Run both variants `--runs` times each and print the medians."""
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from cluster.spec import validate_spec
    from cluster.training.loop import train_loop
    from cluster.training.trainer import fit, loop_config
    from tests.cluster.training.conftest import build_rows, save_rows
    from tests.tiny_model import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="rayfit-bench-"))
    model_dir = build_tiny_model(root / "model")
    train_path = save_rows(build_rows(model_dir, 400, 256, packed=True), root / "train")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, address="local")
    results: dict[str, dict[str, list[float]]] = {
        "one process": {"rate": [], "wall": []},
        "Ray Train, 1 worker": {"rate": [], "wall": []},
    }
    for i in range(args.runs):
        for label in results:
            name = f"{'single' if label == 'one process' else 'ray'}-{i}"
            spec = validate_spec(_spec(model_dir, root / "runs", name, args.steps))
            start = time.perf_counter()
            if label == "one process":
                train_loop(loop_config(spec, train_path, None))
            else:
                fit(spec, train_path, None)
            results[label]["wall"].append(time.perf_counter() - start)
            results[label]["rate"].append(_loop_rate(root / "runs" / name))
    ray.shutdown()
    from benchmarks.results import table, write_results

    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    rows = [[label, spread(r["rate"], ".0f"), spread(r["wall"], ".1f")] for label, r in results.items()]
    header = ["variant", "loop tokens/s, median (min-max)", "end-to-end wall s, median (min-max)"]
    write_results(
        "ray_overhead",
        runs=[{"variant": label, **r} for label, r in results.items()],
        summary={"steps": args.steps, "runs": args.runs},
        tables={"overhead": table(header, rows)},
        notes="full fine-tune of the 2-layer tiny Llama (hidden 128), packed 256-token rows",
    )


if __name__ == "__main__":
    main()
