"""OpenAI's files and fine-tuning routes, and rayfit's model, alias and plan routes, on the app's one FastAPI ingress.

They are plain functions (not methods of the deployment) on a router the server includes; each replica sets the
service they call when it starts with `storage`. Without it, every route answers 404, so the app is today's.
"""

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.
import asyncio
import json
import sys
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from serve.openai_protocol import ApiError

router = APIRouter()
SERVICE: dict[str, Any] = {}  # "service": this replica's FineTuneService, set by OpenAIServer.__init__ (use_service)


def use_service(found: Any) -> None:
    """Make `found` the service of this process's routes. Through sys.modules: Serve ships the routes and the
    deployment class by value, so their own globals are copies, while the imported module is the process's one."""
    sys.modules[__name__].SERVICE["service"] = found


def service():
    found = sys.modules[__name__].SERVICE.get("service")
    if found is None:
        raise ApiError(404, "fine-tuning is not enabled on this server (start the app with storage=URI).", code="not_found")
    return found


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON (UTF-8).") from None


def _limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise ApiError(400, f"limit must be between 1 and 100, got {limit}.", param="limit")
    return limit


def _call(fn, *args):
    return asyncio.to_thread(fn, *args)


@router.post("/v1/files")
async def create_file(request: Request) -> dict:
    return await service().upload(request)


@router.get("/v1/files")
async def list_files(request: Request, after: str | None = None, limit: int = 100, purpose: str | None = None) -> dict:
    return await _call(service().list_files, request, after, _limit(limit), purpose)


@router.get("/v1/files/{file_id}")
async def get_file(request: Request, file_id: str) -> dict:
    return await _call(service().get_file, request, file_id)


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    blob = await _call(service().content, request, file_id)

    def chunks():
        with blob:
            while data := blob.read(1 << 16):
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> dict:
    return await _call(service().delete_file, request, file_id)


@router.post("/v1/fine_tuning/jobs")
async def create_job(request: Request) -> dict:
    return await service().create(request, await _json(request))


@router.get("/v1/fine_tuning/jobs")
async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
    query = request.query_params.items()
    metadata = {k[len("metadata[") : -1]: v for k, v in query if k.startswith("metadata[") and k.endswith("]")}
    return await _call(service().list, request, after, _limit(limit), metadata)


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> dict:
    return await _call(service().get, request, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> dict:
    return await _call(service().cancel, request, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
async def pause_job(request: Request, job_id: str) -> dict:
    return await _call(service().pause, request, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
async def resume_job(request: Request, job_id: str) -> dict:
    return await _call(service().resume, request, job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str, after: str | None = None, limit: int = 20) -> dict:
    return await _call(service().events, request, job_id, after, _limit(limit))


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def job_checkpoints(request: Request, job_id: str, after: str | None = None, limit: int = 10) -> dict:
    return await _call(service().checkpoints, request, job_id, after, _limit(limit))


@router.delete("/v1/models/{model:path}")
async def delete_model(request: Request, model: str) -> dict:
    return await _call(service().delete_model, request, model)


@router.get("/v1/rayfit/aliases")
async def list_aliases(request: Request) -> dict:
    return await _call(service().list_aliases, request)


@router.put("/v1/rayfit/aliases/{name}")
async def put_alias(request: Request, name: str) -> dict:
    return await _call(service().put_alias, request, name, await _json(request))


@router.post("/v1/rayfit/aliases/{name}/rollback")
async def rollback_alias(request: Request, name: str) -> dict:
    return await _call(service().rollback_alias, request, name)


@router.delete("/v1/rayfit/aliases/{name}")
async def delete_alias(request: Request, name: str) -> dict:
    return await _call(service().delete_alias, request, name)


@router.post("/v1/rayfit/plan")
async def plan(request: Request) -> dict:
    return json.loads(json.dumps(await _call(service().plan, request, await _json(request)), default=str))
