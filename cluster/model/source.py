"""Resolving `model.base` to something `from_pretrained` can open: a local folder or a hub id."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from cluster import storage
from cluster.embedded import DONE, cache_root, embedded_model_dir
from cluster.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_base(base: str) -> str:
    """A local folder for embedded, local and object-store bases; the id itself for a hub model."""
    if base.startswith("embedded:"):
        return str(embedded_model_dir(base.removeprefix("embedded:")))
    if storage.is_remote(base):
        return str(_download_once(base))
    path = Path(base.removeprefix("file://")).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if HUB_ID.match(base) and not base.startswith((".", "/", "~")):
        return base
    raise UserError(f"model.base {base!r}: no such folder, and not a hub id (org/name) or a URI. "
                    "Fix: give an existing folder, s3://... or gs://..., org/name, or embedded:smollm2-135m-instruct.")


def _download_once(uri: str) -> Path:
    """Copy an object-store model folder into the local cache once; concurrent workers share one copy."""
    target = storage.cache_dir_for(uri, cache_root() / "remote-models")
    if (target / DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / DONE).exists():
            tmp = Path(tempfile.mkdtemp(dir=target.parent))
            try:
                storage.download_dir(uri, tmp)
                (tmp / DONE).write_text(uri + "\n")
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target
