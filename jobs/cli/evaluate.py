"""`rayfit evaluate RUN_OR_EXPORT`: base vs tuned on the held-out set (jobs/evaluate.py)."""

from __future__ import annotations

import argparse

from jobs import evaluate as job

EXAMPLE = """example:
  rayfit evaluate ~/rayfit-runs/demo-cpu               # writes ~/rayfit-runs/demo-cpu/eval/report.md
  rayfit evaluate ~/rayfit-runs/demo-cpu/export --spec other-data.yaml --out /tmp/eval-other

On a cluster: ray job submit --working-dir . -- python -m jobs.evaluate RUN_OR_EXPORT_URI"""


def register(subparsers) -> None:
    """Add the `evaluate` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare the base and the tuned model on the held-out set (exit 1 when the spec's gate fails)",
        description=job.__doc__.splitlines()[0],
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job.add_arguments(p)
    p.set_defaults(run=job.run)
