"""Self-describing checkpoints and exports: a manifest.json written last, with checksums of every file."""

from __future__ import annotations

import hashlib
import json
import re
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
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "files": files,
    }


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
    """The manifest of the checkpoint or export at `uri` (local or remote); UserError when missing or not a manifest."""
    target = storage.join(uri, MANIFEST)
    if not storage.exists(target):
        raise UserError(
            f"{uri} has no {MANIFEST}: it is not a rayfit checkpoint or export, or it is incomplete. "
            "Fix: point at a folder written by rayfit: RUN/checkpoint_NNNNNNNN, RUN/export, or the run folder RUN."
        )
    try:
        manifest = json.loads(storage.read_text(target))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f"{target} is not valid JSON ({str(e)[:120]}). Fix: restore the folder from the run that wrote it."
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{target} is not a rayfit manifest (no table of files). Fix: point at a folder written by rayfit.")
    return manifest


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
    """Files that are missing, differ from the manifest's checksums, or are weights or code it does not list
    (empty when the folder is intact)."""
    manifest = manifest or read_manifest(str(folder))
    bad = []
    for rel, meta in manifest["files"].items():
        p = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            bad.append(f"{rel}: outside the folder")
        elif not p.is_file():
            bad.append(f"{rel}: missing")
        elif not isinstance(meta, dict) or p.stat().st_size != meta.get("bytes") or sha256_file(p) != meta.get("sha256"):
            bad.append(f"{rel}: checksum differs")
    listed = set(manifest["files"])
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and p.name != MANIFEST and rel not in listed and p.suffix in LOADABLE_SUFFIXES:
            bad.append(f"{rel}: not in the manifest")
    return bad


# Files that torch.load unpickles, so loading one can run any code it carries.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Hugging Face Trainer's own state in a checkpoint: pickles too, but only read to resume the run that wrote them.
TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "rng_state")
# DeepSpeed's ZeRO state (global_stepN/*_model_states.pt, *_optim_states.pt): pickles written by the run's own
# training and read only to resume it or to consolidate its shards; their checksums are in the manifest.
DEEPSPEED_STATE = re.compile(r"^global_step\d+/[^/]+_(model|optim)_states\.pt$")
# What loading a model reads: an unlisted one of these was added after the manifest was written.
LOADABLE_SUFFIXES = (".safetensors", ".py", ".gguf", *PICKLE_SUFFIXES)


def pickle_weights(folder: Path) -> list[str]:
    """Weight files under `folder` stored as pickle (`*.bin`, `*.pt`, `*.pth`...), the Trainer's own state aside."""
    found = [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in PICKLE_SUFFIXES and not p.name.startswith(TRAINER_STATE)
    ]
    return [rel for rel in found if not DEEPSPEED_STATE.match(rel)]


def refuse_pickle_weights(folder: Path, what: str, allow_pickle: bool = False) -> None:
    """Raise a UserError naming the first pickle weight file in `folder`, unless `allow_pickle` opts in."""
    found = [] if allow_pickle else pickle_weights(Path(folder))
    if found:
        raise UserError(
            f"{what} holds pickle weights ({found[0]}{f' and {len(found) - 1} more' if len(found) > 1 else ''}): "
            "loading them runs any code they carry. Fix: save it as safetensors "
            "(save_pretrained(..., safe_serialization=True)), or opt in with allow_pickle if you trust it."
        )


def check_artefact(folder: Path, what: str, manifest: dict | None = None, allow_pickle: bool = False) -> dict:
    """Trust a local copy of a checkpoint, export or adapter only as far as it checks out; returns its manifest.

    Raises a UserError naming the first file that is missing, whose checksum differs from the manifest, that is weights
    or code the manifest does not list, or that holds pickle weights without `allow_pickle`. `what` names the
    artefact in the message (e.g. its URI). Call it on the local files right before loading them.
    """
    folder = Path(folder)
    manifest = manifest or read_manifest(str(folder))
    broken = verify(folder, manifest)
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise UserError(
            f"{what} does not match its manifest: {broken[0]}{more}. Fix: the files changed after rayfit "
            "wrote them; restore them from the run, or train or merge again."
        )
    refuse_pickle_weights(folder, what, allow_pickle)
    return manifest
