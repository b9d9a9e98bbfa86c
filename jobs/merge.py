"""Merge a checkpoint into one deployable model: `python -m jobs.merge CHECKPOINT_OR_RUN_URI [--into ...] [--out URI]`.

On a cluster:  ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.merge ~/rayfit-runs/demo-cpu
Prints the export URI (default RUN/export). Reuses an existing export made from the same checkpoint the same way.
The same command on this machine: `rayfit merge` (jobs/cli/merge.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.errors import run_main


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, merge, print the export URI; user errors print one line and exit 1."""
    p = argparse.ArgumentParser(prog="python -m jobs.merge", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run_main(lambda: run(args))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The merge's arguments, shared by `rayfit merge` and `python -m jobs.merge`."""
    p.add_argument("uri", help="a checkpoint folder, or a run folder (its best complete checkpoint is merged)")
    p.add_argument(
        "--into",
        choices=["dequantized", "original"],
        default="dequantized",
        help="QLoRA only: merge into the dequantized 4-bit base trained against (default) or the original weights",
    )
    p.add_argument("--out", default=None, help="where to write the export (default: RUN/export)")


def run(args: argparse.Namespace) -> int:
    """Merge for parsed arguments and print the export URI."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cluster.merge import merge_checkpoint

    print(merge_checkpoint(args.uri, into=args.into, out_uri=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
