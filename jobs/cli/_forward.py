"""Commands that run another module's command line as a child process: `rayfit ask` (serve.ask) and `rayfit serve`
(Ray Serve's `serve run serve.app:build_app`).

Why a child process and not an import: `jobs` never imports `serve` (the serving engine, vLLM, is not needed to
train), and a process boundary keeps that true at run time as well as in the source; the serving command then owns
its own Ray instance, signals and exit code exactly as when it is started by hand, and its arguments are defined
once, in its own parser. The cost is one interpreter start, small next to starting an engine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def add_forwarding_parser(subparsers, name: str, *, help: str, usage: str, description: str, epilog: str, add_help: bool):
    """A subcommand whose arguments go, unparsed and in order, to a child command (args.forwarded)."""
    p = subparsers.add_parser(
        name,
        help=help,
        usage=usage,
        description=description,
        epilog=epilog,
        add_help=add_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(forwards=True)
    return p


def run_child(command: list[str]) -> int:
    """Run `command` with this interpreter from the repository root; its exit code is ours."""
    try:
        return subprocess.run([sys.executable, *command], cwd=REPO).returncode
    except KeyboardInterrupt:  # the child got the same SIGINT and shuts its Ray down itself
        return 130
