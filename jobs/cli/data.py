"""`rayfit data check SPEC [--json]`: the data quality report before any GPU is held (exit 1 when too much is dropped)."""

from __future__ import annotations

import sys

from cluster.data import DataQualityError, check_data
from cluster.spec import load_spec
from jobs.cli.pairs import add_pairs_action


def register(subparsers) -> None:
    """Add the `data` subcommand group (`data check`, `data pairs`)."""
    p = subparsers.add_parser("data", help="check and inspect training data")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="read, render and tokenize the spec's data; report every problem with file:line")
    check.add_argument("spec", help="path to the YAML job spec")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(run=run_check)
    add_pairs_action(sub)


def run_check(args) -> int:
    """Print the report; when too many rows are dropped, print it anyway and fail with the reason."""
    import datasets

    datasets.disable_progress_bars()  # the report is the output; per-step progress bars would bury it
    spec = load_spec(args.spec)
    try:
        report = check_data(spec)
    except DataQualityError as e:
        print(e.report.to_json() if args.json else e.report.to_table())
        print(f"rayfit: {e}", file=sys.stderr)
        return e.exit_code
    print(report.to_json() if args.json else report.to_table())
    return 0
