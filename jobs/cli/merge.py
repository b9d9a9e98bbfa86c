"""`rayfit merge CHECKPOINT_OR_RUN`: merge an adapter into one deployable model (jobs/merge.py)."""

from __future__ import annotations

import argparse

from jobs import merge as job

EXAMPLE = """example:
  rayfit merge ~/rayfit-runs/demo-cpu                  # the run's best checkpoint -> ~/rayfit-runs/demo-cpu/export
  rayfit merge s3://bucket/runs/70b/checkpoint_00000400 --into original --out s3://bucket/exports/70b

On a cluster: ray job submit --working-dir . -- python -m jobs.merge RUN_OR_CHECKPOINT_URI"""


def register(subparsers) -> None:
    """Add the `merge` subcommand."""
    p = subparsers.add_parser(
        "merge",
        help="merge a checkpoint's adapter into a deployable export",
        description=job.__doc__.splitlines()[0],
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job.add_arguments(p)
    p.set_defaults(run=job.run)
