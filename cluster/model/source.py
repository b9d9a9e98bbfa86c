"""Resolving `model.base` to something `from_pretrained` can open: a local folder or a hub id."""

from __future__ import annotations

import re
from pathlib import Path

from cluster import storage
from cluster.embedded import cache_root, embedded_model_dir
from cluster.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_base(base: str) -> str:
    """A local folder for embedded, local and object-store bases; the id itself for a hub model."""
    if base.startswith("embedded:"):
        return str(embedded_model_dir(base.removeprefix("embedded:")))
    if storage.is_remote(base):
        return str(storage.cached_copy(base, cache_root() / "remote-models"))
    path = Path(base.removeprefix("file://")).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if HUB_ID.match(base) and not base.startswith((".", "/", "~")):
        return base
    raise UserError(
        f"model.base {base!r}: no such folder, and not a hub id (org/name) or a URI. "
        "Fix: give an existing folder, s3://... or gs://..., org/name, or embedded:smollm2-135m-instruct."
    )
