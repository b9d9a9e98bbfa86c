"""Published models and aliases: what a name passed as `model` means, for the app and the driver that publishes.

A published model is one record naming its adapter; a checkpoint name resolves through its job's checkpoint records.
An alias is one record per tenant and name holding its target and the one before it, so repointing is one write and
one call rolls back. Requests resolve a name once, when they arrive, so a request in flight finishes on the target
it started with while the next request sees the new one.
"""

from __future__ import annotations

import time
from typing import Any

from cluster.service import names
from cluster.service.jobs import checkpoints
from cluster.service.store import Store


def model_path(name: str) -> str:
    return f"records/models/{names.record_key(name)}.json"


def alias_path(tenant: str, alias: str) -> str:
    return f"records/aliases/{tenant}.{alias}.json"


def publish(store: Store, name: str, uri: str, parent: str, tenant: str, job_id: str) -> dict[str, Any]:
    """Make `name` callable: one record, written last by the job's driver."""
    record = {
        "id": name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": tenant,
        "parent": parent,
        "uri": uri,
        "job": job_id,
        "tenant": tenant,
    }
    store.put(model_path(name), record)
    return record


def published(store: Store, tenant: str) -> list[dict[str, Any]]:
    """A tenant's published models, oldest first."""
    return sorted((r for r in store.all("records/models") if r["tenant"] == tenant), key=lambda r: r["created"])


def lookup(store: Store, name: str, tenant: str | None) -> dict[str, Any] | None:
    """The record of a published model or checkpoint `name` visible to `tenant` (None: any tenant); None otherwise."""
    parts = names.split(name)
    if parts is None:
        return None
    model, step = parts
    record = store.get(model_path(model))
    if record is None or (tenant is not None and record["tenant"] != tenant):
        return None
    if step is None:
        return record
    found = next((c for c in checkpoints(store, record["job"]) if c["step"] == step), None)
    return {**record, "id": name, "uri": found["uri"]} if found else None


def adapter_uri(store: Store, name: str) -> str | None:
    """Where the adapter of a published name lives (serve/adapters.py asks this for `ft:` names)."""
    found = lookup(store, name, None)
    return found["uri"] if found else None


def get_alias(store: Store, tenant: str, alias: str) -> dict[str, Any] | None:
    return store.get(alias_path(tenant, alias))


def point_alias(store: Store, tenant: str, alias: str, target: str) -> dict[str, Any]:
    """Point `alias` at `target`, keeping the old target for rollback."""
    before = get_alias(store, tenant, alias)
    record = {
        "name": alias,
        "model": target,
        "previous": before["model"] if before and before["model"] != target else (before or {}).get("previous"),
        "updated_at": int(time.time()),
        "tenant": tenant,
    }
    store.put(alias_path(tenant, alias), record)
    return record


def aliases(store: Store, tenant: str) -> list[dict[str, Any]]:
    prefix = f"{tenant}."
    return [store.get(f"records/aliases/{n}.json") for n in store.names("records/aliases") if n.startswith(prefix)]
