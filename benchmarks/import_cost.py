"""What a new Python process pays in CPU time before it does any work: the imports of each process kind the suite
and a job start (a Ray worker, a Ray Train worker, a vLLM engine), each in a fresh interpreter.

    .venv/bin/python -m benchmarks.import_cost [--runs 5]

Writes benchmarks/results/import_cost.json (table `imports`, which docs/testing.md quotes): the CPU seconds (user +
system, from the child's rusage) of `python -c "<imports>"`, median of runs, beside an empty interpreter's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

from benchmarks.results import median, table, write_results

# (what starts such a process, the imports it runs), cheapest first.
STACKS: tuple[tuple[str, str], ...] = (
    ("an empty interpreter", "pass"),
    ("every Ray worker and helper actor (ray)", "import ray"),
    ("torch alone", "import torch"),
    ("Ray Train's API, which a job's driver imports (ray.train.torch)", "import ray.train.torch"),
    ("a vLLM engine (vllm)", "import vllm"),
    (
        "a job's driver (jobs.finetune and what its steps import: data, planner, trainer, tasks)",
        "import jobs.finetune, cluster.data, cluster.planner, cluster.tasks, cluster.training.trainer, ray.train.torch",
    ),
    ("rayfit's training loop module (cluster.training.loop)", "import cluster.training.loop"),
    (
        "a Ray Train worker's libraries (the loop, TRL's SFTTrainer, DeepSpeed, datasets, ray.train.torch)",
        "import cluster.training.loop, datasets, ray.train.torch; from trl import SFTTrainer; "
        "from cluster.training.deepspeed_config import import_deepspeed; import_deepspeed()",
    ),
    (
        "the same, with DeepSpeed imported as the Trainer does (its autotuner then imports mlflow)",
        "import cluster.training.loop, deepspeed, datasets, ray.train.torch; from trl import SFTTrainer",
    ),
)


def cpu_seconds(code: str) -> float:
    """CPU seconds (user + system) of one fresh interpreter running `code`, children's rusage before and after."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cpu_seconds("import cluster.training.loop, vllm")  # warm the page cache once, so no run reads from disk
    runs = [
        {"stack": name, "imports": code, "cpu_s": [round(cpu_seconds(code), 3) for _ in range(args.runs)]}
        for name, code in STACKS
    ]
    summary = {r["stack"]: round(median(r["cpu_s"]), 2) for r in runs}
    rows = [[r["stack"], f"`{r['imports']}`", f"{summary[r['stack']]:.2f}"] for r in runs]
    write_results(
        "import_cost",
        runs=runs,
        summary=summary,
        tables={"imports": table(["process", "imports", "CPU seconds (median)"], rows)},
    )
    for row in rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
