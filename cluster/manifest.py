"""Self-describing checkpoints and exports: a manifest.json written last, with checksums of every file."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.errors import UserError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {sha256, bytes}} for every file under `folder` except the manifest."""
    return {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def build_manifest(kind: str, files: dict[str, dict[str, Any]], **fields: Any) -> dict:
    """The manifest of a checkpoint or export: `kind` ("checkpoint" or "export"), `fields` (spec, base_model, method,
    step, metrics and so on) and the file table `files` ({relative path: {sha256, bytes}})."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **fields, "files": files}


def put_manifest(uri: str, manifest: dict) -> None:
    """Write `manifest` as `uri/manifest.json` (local or remote); its presence marks the folder complete."""
    storage.write_text(storage.join(uri, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True, default=str))


def write_manifest(folder: Path, kind: str, files: dict[str, dict[str, Any]] | None = None, **fields: Any) -> dict:
    """Write `folder/manifest.json` describing it; call it last, since its presence marks the folder complete.

    `files` is the file table when the files are not all in `folder` (a checkpoint whose ranks wrote on several
    nodes), else the folder's own files are listed.
    """
    manifest = build_manifest(kind, file_table(folder) if files is None else files, **fields)
    put_manifest(str(folder), manifest)
    return manifest


def read_manifest(uri: str) -> dict:
    """The manifest of the checkpoint or export at `uri` (local or remote)."""
    target = storage.join(uri, MANIFEST)
    if not storage.exists(target):
        raise UserError(f"{uri} has no {MANIFEST}: it is not a rayfit checkpoint or export, or it is incomplete. "
                        "Fix: point at a folder written by rayfit: RUN/checkpoint_NNNNNNNN, RUN/export, or the run folder RUN.")
    return json.loads(storage.read_text(target))


def merge_file_tables(tables: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One file table from the tables of several nodes' folders; the same path with different contents is an error,
    since both nodes uploaded it into one storage folder and which copy survived is unknown."""
    merged: dict[str, dict[str, Any]] = {}
    for table in tables:
        for rel, meta in table.items():
            if rel in merged and merged[rel] != meta:
                raise RuntimeError(f"two nodes wrote different contents to {rel} of one checkpoint")
            merged[rel] = meta
    return dict(sorted(merged.items()))


def verify(folder: Path, manifest: dict | None = None) -> list[str]:
    """Files that are missing or whose checksum differs from the manifest (empty when the folder is intact)."""
    manifest = manifest or json.loads((folder / MANIFEST).read_text())
    bad = []
    for rel, meta in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            bad.append(f"{rel}: checksum differs")
    return bad
