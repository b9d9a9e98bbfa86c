"""`rayfit models [list|rm]`: the models a key may call on a rayfit service, and unpublishing a fine-tuned one."""

from __future__ import annotations

import argparse

from jobs.cli._api import add_endpoint_args, api_command, connect
from jobs.cli._show import as_json, models_table

EPILOG = """examples:
  rayfit models                                   # the base, your ft: models (with their parent) and adapters
  rayfit models rm ft:smollm2-135m-instruct:faq:ftjob-abc   # unpublish: no longer answered or listed
"""


def register(subparsers) -> None:
    """Add the `models` group; `rayfit models` alone lists."""
    p = subparsers.add_parser(
        "models",
        help="list the models you may call; unpublish a fine-tuned one",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_endpoint_args(p)
    p.add_argument("--json", action="store_true", help="print the model objects as JSON")
    p.set_defaults(run=list_models)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = sub.add_parser("list", help="the models you may call (the default action)", epilog="example:\n  rayfit models list")
    add_endpoint_args(ls)
    ls.add_argument("--json", action="store_true", help="print the model objects as JSON")
    ls.set_defaults(run=list_models)
    rm = sub.add_parser(
        "rm",
        help="unpublish a fine-tuned model (DELETE /v1/models/{model})",
        epilog="example:\n  rayfit models rm ft:smollm2-135m-instruct:faq:ftjob-abc",
    )
    add_endpoint_args(rm)
    rm.add_argument("model")
    rm.set_defaults(run=remove)


@api_command
def list_models(args) -> int:
    """One line per model."""
    page = connect(args).models.list()
    print(as_json(page.data) if args.json else models_table(page.data))
    return 0


@api_command
def remove(args) -> int:
    """Unpublish; the service answers 404 for a model that is not yours."""
    deleted = connect(args).models.delete(args.model)
    print(f"deleted {deleted.id}" if deleted.deleted else f"{deleted.id} was not deleted")
    return 0 if deleted.deleted else 1
