"""`rayfit aliases list|set|rollback|rm`: stable names (e.g. support-bot) for published models on a rayfit service.

Repointing is atomic (requests in flight finish on the old target) and keeps the previous target, so one call rolls
back: the routes are `/v1/rayfit/aliases` (docs/service-client.md).
"""

from __future__ import annotations

import argparse
from urllib.parse import quote

from jobs.cli._api import add_endpoint_args, api_command, connect, rayfit_route
from jobs.cli._show import aliases_table, as_json

EPILOG = """examples:
  rayfit aliases set support-bot ft:smollm2-135m-instruct:faq:ftjob-abc
  rayfit aliases list
  rayfit aliases rollback support-bot    # back to the previous target
  rayfit aliases rm support-bot
Clients then call `model="support-bot"` on /v1/chat/completions.
"""


def register(subparsers) -> None:
    """Add the `aliases` group."""
    p = subparsers.add_parser(
        "aliases",
        help="point stable names at published models; roll back",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="aliases_command", required=True, metavar="ACTION")
    ls = _action(sub, "list", "your aliases with their targets and previous targets", "rayfit aliases list")
    ls.add_argument("--json", action="store_true", help="print the alias records as JSON")
    ls.set_defaults(run=list_aliases)
    st = _action(sub, "set", "point NAME at MODEL (atomic; the old target is kept)", "rayfit aliases set support-bot ft:...")
    st.add_argument("name")
    st.add_argument("model", help="a published ft: model (or checkpoint) of yours")
    st.set_defaults(run=set_alias)
    rb = _action(sub, "rollback", "point NAME back at its previous target", "rayfit aliases rollback support-bot")
    rb.add_argument("name")
    rb.set_defaults(run=rollback)
    rm = _action(sub, "rm", "delete an alias (the model stays published)", "rayfit aliases rm support-bot")
    rm.add_argument("name")
    rm.set_defaults(run=remove)


def _action(sub, name: str, help_text: str, example: str):
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}")
    add_endpoint_args(p)
    return p


def _path(name: str, tail: str = "") -> str:
    return f"/rayfit/aliases/{quote(name, safe='')}{tail}"


def _shown(alias: dict) -> str:
    before = f" (previous: {alias['previous']})" if alias.get("previous") else ""
    return f"{alias['name']} -> {alias['model']}{before}"


@api_command
def list_aliases(args) -> int:
    """One line per alias."""
    found = rayfit_route(connect(args), "get", "/rayfit/aliases")["data"]
    print(as_json(found) if args.json else aliases_table(found))
    return 0


@api_command
def set_alias(args) -> int:
    """PUT the new target."""
    print(_shown(rayfit_route(connect(args), "put", _path(args.name), {"model": args.model})))
    return 0


@api_command
def rollback(args) -> int:
    """POST .../rollback."""
    print(_shown(rayfit_route(connect(args), "post", _path(args.name, "/rollback"), {})))
    return 0


@api_command
def remove(args) -> int:
    """DELETE the alias."""
    rayfit_route(connect(args), "delete", _path(args.name))
    print(f"deleted alias {args.name}")
    return 0
