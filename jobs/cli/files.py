"""`rayfit files upload|list|rm`: training files on a rayfit fine-tuning service (OpenAI's /v1/files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cluster.errors import UserError
from jobs.cli._api import add_endpoint_args, api_command, connect
from jobs.cli._show import as_json, files_table

EPILOG = """examples:
  export RAYFIT_BASE_URL=http://127.0.0.1:8000/v1 RAYFIT_API_KEY=...
  rayfit files upload faq.jsonl          # checked by the service's data check before it is accepted
  rayfit files list
  rayfit files rm file-0123abcd
"""


def register(subparsers) -> None:
    """Add the `files` group."""
    p = subparsers.add_parser(
        "files",
        help="upload, list and delete training files on a fine-tuning service",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="files_command", required=True, metavar="ACTION")

    up = _action(sub, "upload", "upload a JSONL file (purpose fine-tune); prints its id", "rayfit files upload faq.jsonl")
    up.add_argument("path", help="the JSON Lines file (chat messages, prompt/completion, alpaca or DPO pairs)")
    up.add_argument("--purpose", default="fine-tune", help="the file's purpose (default: fine-tune)")
    up.add_argument("--json", action="store_true", help="print the file object as JSON")
    up.set_defaults(run=upload)

    ls = _action(sub, "list", "your files, newest first", "rayfit files list --purpose fine-tune")
    ls.add_argument("--purpose", help="only files with this purpose")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default: 100)")
    ls.add_argument("--json", action="store_true", help="print the file objects as JSON")
    ls.set_defaults(run=list_files)

    rm = _action(sub, "rm", "delete a file (refused while an unfinished job uses it)", "rayfit files rm file-0123abcd")
    rm.add_argument("file_id")
    rm.set_defaults(run=remove)


def _action(sub, name: str, help_text: str, example: str):
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_endpoint_args(p)
    return p


def upload_file(client, path: str | Path, purpose: str = "fine-tune"):
    """Stream one local file to POST /v1/files; the FileObject the service accepted."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file. Fix: give the path of a JSON Lines file.")
    with path.open("rb") as f:
        return client.files.create(file=(path.name, f), purpose=purpose)


@api_command
def upload(args) -> int:
    """Upload and print the new file's id (first column) and what the service counted."""
    found = upload_file(connect(args), args.path, args.purpose)
    print(as_json(found) if args.json else files_table([found]))
    return 0


@api_command
def list_files(args) -> int:
    """One line per file."""
    page = connect(args).files.list(**({"purpose": args.purpose} if args.purpose else {}), limit=args.limit)
    print(as_json(page.data) if args.json else files_table(page.data))
    return 0


@api_command
def remove(args) -> int:
    """Delete; the service refuses a file an unfinished job uses."""
    deleted = connect(args).files.delete(args.file_id)
    print(f"deleted {deleted.id}" if deleted.deleted else f"{deleted.id} was not deleted")
    return 0 if deleted.deleted else 1
