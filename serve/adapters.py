"""Finding what to serve: the base (or export) folder, and each adapter's folder by name, local or in object storage."""

from __future__ import annotations

from cluster import run_folder, storage
from cluster.manifest import MANIFEST
from cluster.model.artefacts import ADAPTER_CONFIG, adapter_dir, resolve_model
from cluster.model.artefacts import has_file as _has
from serve.args import NAME, ServeArgs

__all__ = ["ADAPTER_CONFIG", "adapter_dir", "adapter_uri", "resolve_model", "root_names"]


def adapter_uri(args: ServeArgs, name: str) -> str | None:
    """Where adapter `name` lives: listed in args, published by the fine-tuning service (`ft:` names, looked up in
    `storage` on first use), or a sub-folder of adapter_root; None when unknown."""
    if name in args.adapters:
        return args.adapters[name]
    if args.storage and name.startswith("ft:"):
        from cluster.service.published import adapter_uri as published_uri
        from cluster.service.store import Store

        return published_uri(Store(args.storage), name)
    if args.adapter_root is None or not NAME.match(name):
        return None
    candidate = storage.join(args.adapter_root, name)
    if _has(candidate, MANIFEST) or _has(candidate, ADAPTER_CONFIG):
        return candidate
    chosen = run_folder.best(run_folder.checkpoints(candidate))  # a run folder: serve its best checkpoint
    return chosen.uri if chosen else None


def root_names(args: ServeArgs) -> list[str]:
    """Adapter names found under adapter_root now (for /v1/models)."""
    if args.adapter_root is None:
        return []
    return [d for d in storage.list_dirs(args.adapter_root) if NAME.match(d) and d not in args.adapters]
