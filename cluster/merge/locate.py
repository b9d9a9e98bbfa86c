"""Finding the checkpoint a merge starts from: a checkpoint folder itself, or the best one of a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cluster import storage
from cluster.embedded import cache_root
from cluster.errors import UserError
from cluster.manifest import MANIFEST, read_manifest

RUN_FILE = "run.json"
# run.json keys the driver may use for the checkpoint to export, most preferred first.
RUN_CHECKPOINT_KEYS = ("best_checkpoint", "best_checkpoint_uri", "latest_checkpoint", "latest_checkpoint_uri")


def find_checkpoint(uri: str) -> tuple[str, dict]:
    """The checkpoint URI and its manifest for a checkpoint folder or a run folder (its best complete checkpoint)."""
    uri = storage.normalize(uri)
    if storage.exists(storage.join(uri, MANIFEST)):
        manifest = read_manifest(uri)
        if manifest.get("kind") != "checkpoint":
            raise UserError(f"{uri} is a rayfit {manifest.get('kind')!r}, not a checkpoint. "
                            "Fix: give a checkpoint folder (RUN/checkpoint_*) or the run folder.")
        return uri, manifest
    chosen = _from_run_file(uri) or _newest_complete(uri)
    if chosen is None:
        raise UserError(f"{uri} has no {MANIFEST} and no complete checkpoint_*/ folder (one with a {MANIFEST}). "
                        "Fix: give a run folder written by `python -m jobs.finetune`, or one of its checkpoint folders; "
                        "a checkpoint without manifest.json was interrupted while saving.")
    return chosen, read_manifest(chosen)


def _from_run_file(run_uri: str) -> str | None:
    run_file = storage.join(run_uri, RUN_FILE)
    if not storage.exists(run_file):
        return None
    run = json.loads(storage.read_text(run_file))
    for key in RUN_CHECKPOINT_KEYS:
        value = run.get(key)
        if value and storage.exists(storage.join(_absolute(value, run_uri), MANIFEST)):
            return _absolute(value, run_uri)
    return None


def _absolute(uri: str, run_uri: str) -> str:
    """run.json may name a checkpoint relative to the run folder."""
    if storage.is_remote(uri) or uri.startswith(("/", "file://")):
        return storage.normalize(uri)
    return storage.join(run_uri, uri)


def _newest_complete(run_uri: str) -> str | None:
    """Checkpoint folders are named by time, so the last complete one in name order is the newest."""
    for parent in (run_uri, storage.join(run_uri, "checkpoints")):
        names = [n for n in storage.list_dirs(parent) if n.startswith("checkpoint")]
        for name in reversed(names):
            if storage.exists(storage.join(parent, name, MANIFEST)):
                return storage.join(parent, name)
    return None


def run_dir_of(checkpoint_uri: str) -> str:
    """The run folder holding a checkpoint: its parent, skipping a `checkpoints/` level."""
    parent = checkpoint_uri.rstrip("/").rsplit("/", 1)[0]
    return parent.rsplit("/", 1)[0] if parent.endswith("/checkpoints") else parent


def local_copy(uri: str) -> Path:
    """A local folder with the checkpoint's files: the folder itself, or a cached download of a remote one."""
    if not storage.is_remote(uri):
        return storage.local_path(uri)
    dest = storage.cache_dir_for(uri, cache_root() / "checkpoints")
    remote_manifest = storage.read_text(storage.join(uri, MANIFEST))
    # A copy with the same manifest is the same checkpoint; a save repeated at the same URI replaces the copy.
    if not (dest / MANIFEST).exists() or (dest / MANIFEST).read_text(encoding="utf-8") != remote_manifest:
        shutil.rmtree(dest, ignore_errors=True)
        storage.download_dir(uri, dest)
    return dest
