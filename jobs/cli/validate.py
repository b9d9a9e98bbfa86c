"""`rayfit validate SPEC`: print the resolved spec, or every problem in it (exit 2)."""

from __future__ import annotations

import json

import yaml

from cluster.spec import load_spec


def register(subparsers) -> None:
    """Add the `validate` subcommand."""
    p = subparsers.add_parser("validate", help="check a spec and print it with every default filled in")
    p.add_argument("spec", help="path to the YAML job spec")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(run=run)


def run(args) -> int:
    """Validate and print the resolved spec."""
    spec = load_spec(args.spec).model_dump(mode="json")
    print(json.dumps(spec, indent=2) if args.json else yaml.safe_dump(spec, sort_keys=False), end="")
    return 0
