"""Base vs tuned on the held-out set: `python -m jobs.evaluate RUN_OR_EXPORT_URI [--spec SPEC] [--out URI]`.

On a cluster:  ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate ~/rayfit-runs/demo-cpu
Writes report.json, report.md and chart.png (default RUN/eval), prints the table, and exits 1 when the spec's gate fails.
The answers come from vLLM engines on Ray (RAY_ADDRESS inside `ray job submit`, else a private local Ray).
The same command on this machine: `rayfit evaluate` (jobs/cli/evaluate.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cluster.errors import run_main


def main(argv: list[str] | None = None) -> int:
    """Resolve what to evaluate, run base vs tuned, print the report table; user errors print one line."""
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run_main(lambda: run(args))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation's arguments, shared by `rayfit evaluate` and `python -m jobs.evaluate`."""
    p.add_argument("uri", help="an export, a checkpoint, or a run folder (its export, else its best checkpoint)")
    p.add_argument(
        "--spec", default=None, help="evaluate with this spec (base model, data, evaluate section) instead of the run's own"
    )
    p.add_argument("--out", default=None, help="where to write the reports (default: RUN/eval)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster for the vLLM engines that answer (default: RAY_ADDRESS, as inside `ray job submit`; "
        "else a new local Ray)",
    )


def run(args: argparse.Namespace) -> int | None:
    """Evaluate for parsed arguments; the exit code is the gate's (cluster.evaluation raises when it fails)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cluster.evaluation.report import markdown
    from cluster.evaluation.run import evaluate_run
    from cluster.evaluation.target import resolve_target
    from cluster.run_folder import part
    from cluster.spec import load_spec

    tuned, spec, run_folder = resolve_target(args.uri)
    # The run's own tokenized data is reused, unless another spec may define other data.
    cache = None if args.spec else part(run_folder, "data")
    spec = load_spec(args.spec) if args.spec else spec
    out = args.out or part(run_folder, "eval")
    if spec.evaluate.max_samples != 0:  # the answers come from vLLM engines on Ray
        from jobs.engine_ray import connect

        connect(args.address)
    report = evaluate_run(spec, tuned, out, cache_dir=cache)
    print(markdown(report).split("\n## Sample")[0].rstrip())
    print(f"\nreports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
