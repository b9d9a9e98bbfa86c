"""Uploaded files: the data check that decides acceptance (the one `rayfit data check` runs), and their records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cluster.data.preference import PREFERENCE_REASONS
from cluster.errors import UserError
from cluster.service.store import Store, new_id

# Drops that mean a row is broken (a duplicate row is not: the data check keeps one of them, as in training).
BAD = ("unparseable", "not utf-8", "missing field", "unknown role", "empty content", "wrong role order", "no assistant turn")
BAD_PAIRS = ("unparseable", "not utf-8", *PREFERENCE_REASONS)
SHOWN = 5
# What a fine-tune file trains, and how a message names it: conversations/completions (method supervised),
# preference pairs (dpo), or prompts without answers whose extra fields graders read (reinforcement).
SHAPES = {
    "sft": "supervised examples (conversations or completions)",
    "dpo": "preference pairs",
    "prompts": "prompts without answers (reinforcement fine-tuning rows)",
}


class BadFile(UserError):
    """The upload is refused; `message` names the first bad lines and their reasons."""


def check_upload(path: Path, filename: str) -> tuple[int, str]:
    """Read every row of an uploaded JSONL file with the data pipeline's reader and format detection; returns the row
    count and the file's shape (`sft`; `dpo` for preference pairs, TRL's or OpenAI's DPO rows; `prompts` for OpenAI's
    RFT rows, messages ending with a user turn, or TRL's prompt-only rows), or raises BadFile naming the first bad
    lines (`file:line: reason (detail)`)."""
    from cluster.data.pipeline import read_all, source_format
    from cluster.data.preference_prepare import PAIRS, read_preference_sources
    from cluster.data.prompts import holds_prompts, read_prompts
    from cluster.spec.data import DataSpec, SourceSpec

    if path.stat().st_size == 0:
        raise BadFile(f"{filename} is empty. Fix: upload JSONL with one training example per line.")
    data = DataSpec(train=[SourceSpec(path=str(path))])
    try:
        fmt = source_format(data.train[0])
        prompts = fmt == "prompt_only" or (fmt == "messages" and holds_prompts(data.train[0]))
        shape = "dpo" if fmt == "preference" else "prompts" if prompts else "sft"
        if shape == "dpo":
            rows, report, _ = read_preference_sources(data, PAIRS)
        elif shape == "prompts":
            rows, report = read_prompts(data)
        else:
            loaded = read_all(data)
            rows, report = loaded.samples, loaded.report
    except UserError as e:
        raise BadFile(f"{filename}: {e}".replace(str(path), filename)) from None
    broken = BAD_PAIRS if shape == "dpo" else BAD
    bad = sorted(
        (_named(reason, example) for reason, entry in report.dropped.items() if reason in broken for example in entry.examples),
        key=_line_of,
    )
    if bad:
        count = sum(e.count for r, e in report.dropped.items() if r in broken)
        shown = "; ".join(str(b).replace(str(path), filename) for b in bad[:SHOWN])
        what = {"dpo": "preference pairs", "prompts": "prompts"}.get(shape, "training examples")
        raise BadFile(
            f"{filename}: {count} of {report.rows_read} lines are not valid {what}: {shown}"
            f"{'; ...' if count > SHOWN else ''}. Fix: repair those lines (`rayfit data check` lists every one)."
        )
    if not rows:
        raise BadFile(f"{filename} holds no training examples. Fix: upload JSONL with one example per line.")
    return report.rows_read, shape


def _named(reason: str, example: str) -> str:
    """`file:line: reason (detail)` from the report's `file:line (detail)` example."""
    where, paren, detail = example.partition(" (")
    return f"{where}: {reason}" + (f" ({detail}" if paren else "")


def _line_of(text: Any) -> int:
    where = str(text).split(": ", 1)[0]
    tail = where.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def file_object(record: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI FileObject of a stored record."""
    keys = ("id", "bytes", "created_at", "filename", "purpose", "status")
    return {"object": "file", **{k: record[k] for k in keys}, "expires_at": None, "status_details": None}


def store_file(
    store: Store, local: Path, filename: str, tenant: str, purpose: str, size: int, rows: int, shape: str
) -> dict[str, Any]:
    """Store the checked bytes, then the record (last, so a record always has its bytes); returns the record."""
    file_id = new_id("file")
    blob = f"blobs/{file_id}{local.suffix}"  # the suffix tells the data reader the file's kind (.jsonl or .json)
    store.put_file(local, blob)
    record = {
        "id": file_id,
        "blob": blob,
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "tenant": tenant,
        "rows": rows,
        "shape": shape,
    }
    store.put(f"records/files/{file_id}.json", record)
    return record


def tenant_files(store: Store, tenant: str) -> list[dict[str, Any]]:
    """A tenant's file records, newest first."""
    return sorted((r for r in store.all("records/files") if r["tenant"] == tenant), key=lambda r: -r["created_at"])
