"""The `rayfit` command: each module in this package adds one or more subcommands via `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cluster.errors import run_main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand module of jobs.cli registered."""
    parser = argparse.ArgumentParser(prog="rayfit", description="Fine-tune and serve LLMs on Ray.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):  # a module may add actions to another's group instead (pairs -> data)
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one clear message and exit non-zero, without a traceback."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "forwards", False):  # ask, serve: their own command line parses these (jobs/cli/_forward.py)
        args.forwarded = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run_main(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
