"""`rayfit finetune SPEC`: data check -> plan -> train -> merge -> evaluate, as the spec asks (jobs/finetune.py)."""

from __future__ import annotations

import argparse

from jobs import finetune as job

EXAMPLE = """example:
  rayfit finetune jobs/specs/demo-cpu.yaml --address local    # the demo, on a private local Ray

On a cluster, `ray job submit --working-dir . -- python -m jobs.finetune SPEC` runs the same code
(or `rayfit submit SPEC`, which checks the spec, data and plan on your machine first)."""


def register(subparsers) -> None:
    """Add the `finetune` subcommand."""
    p = subparsers.add_parser(
        "finetune",
        help="run a fine-tuning job end to end on this Ray (or the one --address names)",
        description=job.__doc__.splitlines()[0],
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job.add_arguments(p)
    p.set_defaults(run=job.run)
