"""API keys: read from environment variables or mounted secret files inside the replica, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import UserError
from serve.args import ApiKeyArgs


@dataclass(frozen=True)
class Key:
    """One accepted key, kept as its SHA-256 digest; `models` None means every model."""

    digest: bytes
    models: frozenset[str] | None
    source: str
    tenant: str = "default"
    max_concurrent_jobs: int | None = None
    max_stored_bytes: int | None = None


def load_keys(entries: list[ApiKeyArgs]) -> list[Key]:
    """Read every configured key; raises UserError naming each variable or file that is missing or empty."""
    keys, missing = [], []
    for entry in entries:
        source = f"env {entry.env}" if entry.env else f"file {entry.file}"
        if entry.env:
            value = os.environ.get(entry.env, "").strip()
        else:
            path = Path(entry.file)
            value = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if not value:
            missing.append(source)
            continue
        models = frozenset(entry.models) if entry.models is not None else None
        limits = {"max_concurrent_jobs": entry.max_concurrent_jobs, "max_stored_bytes": entry.max_stored_bytes}
        keys.append(Key(hashlib.sha256(value.encode()).digest(), models, source, entry.tenant_name(), **limits))
    if missing:
        raise UserError(
            f"API keys not found: {', '.join(missing)}. Fix: set each environment variable on the Ray "
            "nodes (e.g. a Kubernetes secret in env) or mount the secret file, or remove it from api_keys."
        )
    return keys


def find_key(keys: list[Key], authorization: str | None) -> Key | None:
    """The key that matches an `Authorization: Bearer ...` header, or None."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
    match = None
    for key in keys:  # check all keys, so timing says nothing about which one matched
        if hmac.compare_digest(key.digest, digest):
            match = key
    return match


def may_use(key: Key | None, model: str) -> bool:
    """Whether a request authenticated with `key` (None: auth is off) may use or see `model`."""
    return key is None or key.models is None or model in key.models
