"""The fine-tuning API behind the OpenAI routes: tenants, files, published models and aliases (jobs: serve/service_jobs.py).

Every request reads the store, never a replica's memory, so replicas agree and a restarted one has every record.
Another tenant's file, job, model or alias is answered exactly like one that does not exist (404).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from cluster.errors import UserError
from cluster.service import names, published
from cluster.service.files import BadFile, check_upload, file_object, store_file, tenant_files
from cluster.service.jobs import UNFINISHED, status_of, tenant_jobs
from cluster.service.store import Store
from serve.args import ServeArgs
from serve.auth import Key, find_key
from serve.openai_protocol import ApiError
from serve.uploads import receive_upload, scratch_folder

logger = logging.getLogger("ray.serve")
PURPOSES = ("fine-tune",)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the tenant, and the key (None when the app has no keys)."""

    tenant: str
    key: Key | None


def not_found(what: str, name: str, param: str | None = None) -> ApiError:
    """The one answer for what does not exist and what belongs to another tenant."""
    return ApiError(404, f"No such {what}: {name!r}.", param=param, code=f"{what.replace(' ', '_')}_not_found")


class ServiceCore:
    """Tenancy, files, models and aliases over the store."""

    def __init__(self, args: ServeArgs, keys: list[Key]):
        self.args, self.keys = args, keys
        self.store = Store(args.storage)
        self.base = args.base_name()

    def caller(self, request: Request) -> Caller:
        """The caller's tenant; 401 when keys are configured and the request has none of them."""
        if not self.keys:
            return Caller("default", None)
        key = find_key(self.keys, request.headers.get("authorization"))
        if key is None:
            raise ApiError(
                401,
                "missing or invalid API key. Send `Authorization: Bearer <key>`.",
                type="authentication_error",
                code="invalid_api_key",
            )
        return Caller(key.tenant, key)

    # Files

    async def upload(self, request: Request) -> dict[str, Any]:
        """POST /v1/files: stream to a scratch file (refused at the limit), check every row, then store."""
        caller = self.caller(request)
        with scratch_folder() as tmp:
            up = await receive_upload(request, Path(tmp), self.args.finetune.max_upload_bytes)
            purpose = up.fields.get("purpose")
            if purpose not in PURPOSES:
                raise ApiError(
                    400, f"purpose {purpose!r} is not supported here; use one of: {', '.join(PURPOSES)}.", param="purpose"
                )
            if up.path is None:
                raise ApiError(400, "the form has no `file` part.", param="file")
            self._check_bytes(caller, up.size)
            try:
                rows, shape = await asyncio.to_thread(check_upload, up.path, up.filename)
            except BadFile as e:
                raise ApiError(400, str(e), param="file", code="invalid_file") from None
            record = await asyncio.to_thread(
                store_file, self.store, up.path, up.filename, caller.tenant, purpose, up.size, rows, shape
            )
        return file_object(record)

    def _check_bytes(self, caller: Caller, size: int) -> None:
        limit = caller.key.max_stored_bytes if caller.key else None
        if limit is None:
            return
        used = sum(r["bytes"] for r in tenant_files(self.store, caller.tenant))
        if used + size > limit:
            raise ApiError(
                429,
                f"tenant {caller.tenant!r} would store {used + size} bytes, more than its max_stored_bytes ({limit}). "
                "Delete files (DELETE /v1/files/{id}) or ask for a higher limit.",
                type="rate_limit_error",
                param="file",
                code="max_stored_bytes",
            )

    def file_record(self, caller: Caller, file_id: str, param: str | None = None) -> dict[str, Any]:
        record = self.store.get(f"records/files/{names.record_key(file_id)}.json") if file_id.startswith("file-") else None
        if record is None or record["tenant"] != caller.tenant:
            raise not_found("file", file_id, param)
        return record

    def list_files(self, request: Request, after: str | None, limit: int, purpose: str | None) -> dict[str, Any]:
        caller = self.caller(request)
        found = [r for r in tenant_files(self.store, caller.tenant) if purpose in (None, r["purpose"])]
        return page([file_object(r) for r in found], after, limit)

    def get_file(self, request: Request, file_id: str) -> dict[str, Any]:
        return file_object(self.file_record(self.caller(request), file_id))

    def content(self, request: Request, file_id: str):
        return self.store.open(self.file_record(self.caller(request), file_id)["blob"])

    def delete_file(self, request: Request, file_id: str) -> dict[str, Any]:
        caller = self.caller(request)
        record = self.file_record(caller, file_id)
        for job in tenant_jobs(self.store, caller.tenant):
            uses = file_id in (job["training_file"], job.get("validation_file"))
            if uses and status_of(self.store, job["id"])["status"] in UNFINISHED:
                raise ApiError(
                    400,
                    f"file {file_id} is used by job {job['id']}, which has not finished. Cancel the job or wait for it.",
                    param="file_id",
                    code="file_in_use",
                )
        self.store.delete(f"records/files/{file_id}.json")  # the record first: a file without one is invisible
        self.store.delete(record["blob"])
        return {"id": file_id, "object": "file", "deleted": True}

    # Models and aliases

    def route(self, model: str, key: Key | None) -> str | None:
        """What a chat/completions `model` names when it is the service's: an alias's target or an `ft:` name
        of the caller's tenant; None for any other name; 404 for another tenant's or an unpublished one."""
        tenant = key.tenant if key else "default"
        if model == self.base or (model in self.args.adapters):
            return None
        alias = published.get_alias(self.store, tenant, model) if names.ALIAS.match(model) else None
        if alias is not None:
            model = alias["model"]
        if names.split(model) is None:
            return None
        if published.lookup(self.store, model, tenant) is None:
            raise not_found("model", model, "model")
        return model

    def cards(self, key: Key | None) -> list[dict[str, Any]]:
        tenant = key.tenant if key else "default"
        keep = ("id", "object", "created", "owned_by", "parent")
        return [{k: r[k] for k in keep} for r in published.published(self.store, tenant)]

    def delete_model(self, request: Request, model: str) -> dict[str, Any]:
        caller = self.caller(request)
        record = published.lookup(self.store, model, caller.tenant)
        if record is None or names.split(model)[1] is not None:
            raise not_found("model", model, "model")
        self.store.delete(published.model_path(model))
        return {"id": model, "object": "model", "deleted": True}

    def list_aliases(self, request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [a for a in published.aliases(self.store, self.caller(request).tenant) if a]}

    def put_alias(self, request: Request, name: str, body: Any) -> dict[str, Any]:
        caller = self.caller(request)
        if not names.ALIAS.match(name) or names.split(name) is not None or name == self.base:
            raise ApiError(400, f"alias {name!r} must be a plain name (letters, digits, '.', '_', '-').", param="name")
        target = body.get("model") if isinstance(body, dict) else None
        if not isinstance(target, str) or published.lookup(self.store, target, caller.tenant) is None:
            raise ApiError(400, f"model {target!r} is not a model published here for this tenant.", param="model")
        return published.point_alias(self.store, caller.tenant, name, target)

    def rollback_alias(self, request: Request, name: str) -> dict[str, Any]:
        caller = self.caller(request)
        alias = published.get_alias(self.store, caller.tenant, name)
        if alias is None:
            raise not_found("alias", name)
        if not alias.get("previous"):
            raise ApiError(400, f"alias {name!r} has no previous target to roll back to.", param="name")
        return published.point_alias(self.store, caller.tenant, name, alias["previous"])

    def delete_alias(self, request: Request, name: str) -> dict[str, Any]:
        caller = self.caller(request)
        if published.get_alias(self.store, caller.tenant, name) is None:
            raise not_found("alias", name)
        self.store.delete(published.alias_path(caller.tenant, name))
        return {"id": name, "object": "alias", "deleted": True}


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page over `items` (already newest first): those after the id `after`, at most `limit`."""
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def check_binding(args: ServeArgs) -> None:
    """Without API keys the fine-tuning API is refused on any interface but loopback (docs/service.md)."""
    if args.storage is None or args.api_keys:
        return
    try:
        from ray.serve.context import _get_global_client

        host = _get_global_client().http_config.host
    except Exception:  # noqa: BLE001 - no controller to ask (a test building the app alone): nothing is exposed
        return
    if host in ("localhost",) or (host and ipaddress.ip_address(host).is_loopback):
        return
    raise UserError(
        f"storage is set but no api_keys are configured, and Serve listens on {host}: anyone who reaches it could "
        "upload data and start jobs. Fix: add api_keys to the app's args, or serve on 127.0.0.1 (`serve run --host 127.0.0.1`)."
    )
