"""Fine-tuning jobs behind `/v1/fine_tuning/jobs`: create (validated whole before anything is stored), cancel, pause,
resume, events, checkpoints, the planner's estimate, and the loop that reconciles jobs with Ray's own view of them."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import Request

from cluster.service import jobs, names, published, ray_jobs
from cluster.service.files import SHAPES
from cluster.service.job_request import BadRequest, JobRequest, parse_request, resolve_spec
from cluster.service.store import new_id
from cluster.spec.reader import read_yaml_file
from serve.openai_protocol import ApiError
from serve.service import Caller, ServiceCore, not_found, page

logger = logging.getLogger("ray.serve")
DEMO_TEMPLATE = Path(__file__).resolve().parents[1] / "jobs" / "specs" / "demo-cpu.yaml"
TRAINS = {"supervised": "sft", "dpo": "dpo", "reinforcement": "prompts"}  # the file shape (files.SHAPES) a method trains on
WATCH_S = 0.5  # how often a replica reads the status of the unfinished jobs it knows (one small read each)


class FineTuneService(ServiceCore):
    """The whole fine-tuning API of one replica; its state is the store."""

    def __init__(self, args, keys, max_lora_rank: int | None = None):
        super().__init__(args, keys)
        self.max_lora_rank = max_lora_rank  # the engine's: a job whose adapter it could not load is refused at creation
        # Unfinished jobs this replica knows of, so it can load their models as they succeed. Only a shortcut: the
        # store stays the truth, and a replica that never saw a job loads its model on first use instead.
        self.watching: set[str] = set()
        bases = args.finetune.bases or {self.base: str(DEMO_TEMPLATE)}
        self.templates = {n: t if isinstance(t, dict) else read_yaml_file(t, "template spec").data for n, t in bases.items()}
        self._client = None

    def ray(self):
        if self._client is None:
            self._client = ray_jobs.client(ray_jobs.job_server(self.args.finetune.ray_address))
        return self._client

    def _prepare(self, caller: Caller, body: Any) -> tuple[JobRequest, dict[str, Any]]:
        """Every check of a create body, and the job record it would make; raises ApiError, stores nothing."""
        try:
            req = parse_request(body)
        except BadRequest as e:
            raise ApiError(400, e.message, param=e.param, code=e.code) from None
        parent, init_from = req.model, None
        warm = published.lookup(self.store, req.model, caller.tenant) if names.split(req.model) else None
        if warm is not None:
            parent, init_from = warm["parent"], warm["uri"]
        if parent not in self.templates:
            raise ApiError(
                400,
                f"model {req.model!r} cannot be fine-tuned here; use one of: {', '.join(self.templates)} "
                "or an ft: model of yours.",
                param="model",
                code="model_not_available",
            )
        if req.suffix is not None and (why := names.suffix_problem(req.suffix)):
            raise ApiError(400, why, param="suffix")
        method = req.method_type()
        train = self._job_file(caller, req.training_file, "training_file", method)
        valid = self._job_file(caller, req.validation_file, "validation_file", method) if req.validation_file else None
        job_id = new_id("ftjob")
        output = (self.store.uri("runs"), job_id)
        base_uri = self.args.model if parent == self.base else parent
        try:
            spec, hyper = resolve_spec(
                req, copy.deepcopy(self.templates[parent]), base_uri, train, valid, output, init_from, self.max_lora_rank
            )
        except BadRequest as e:
            raise ApiError(400, e.message, param=e.param, code=e.code) from None
        suffix = req.suffix or caller.tenant
        record = {
            "id": job_id,
            "created_at": int(time.time()),
            "tenant": caller.tenant,
            "model": req.model,
            "parent": parent,
            "init_from": init_from,
            "suffix": req.suffix,
            "fine_tuned_model": names.model_name(parent, suffix, job_id),
            "training_file": req.training_file,
            "validation_file": req.validation_file,
            "metadata": req.metadata,
            "method": method,
            "grader": req.method.reinforcement.grader if method == "reinforcement" else None,  # shown in the job object
            "hyperparameters": hyper,
            "attempt": 1,
            "submission_id": f"{job_id}-1",
            "run": self.store.uri("runs", job_id),
        }
        return req, {"record": record, "spec": spec}

    def _job_file(self, caller: Caller, file_id: str, param: str, method: str) -> str:
        """The blob of the caller's file, whose rows `method` trains on; another tenant's file is answered as one that
        does not exist."""
        record = self.store.get(f"records/files/{names.record_key(file_id)}.json") if file_id.startswith("file-") else None
        if record is None or record["tenant"] != caller.tenant:
            raise ApiError(400, f"{param} {file_id!r} does not exist (or was deleted).", param=param, code="file_not_found")
        # A record without a shape predates DPO uploads, when the check accepted supervised rows only.
        shape, wanted = record.get("shape", "sft"), TRAINS[method]
        if shape != wanted:
            fix = f"method {{type: {next(m for m, s in TRAINS.items() if s == shape)}}}, or a file of {SHAPES[wanted]}"
            raise ApiError(
                400,
                f"{param} {file_id!r} holds {SHAPES[shape]}, which method {method} does not train on. Fix: use {fix}.",
                param=param,
                code="invalid_file_for_method",
            )
        return self.store.uri(record["blob"])

    def _check_concurrency(self, caller: Caller) -> None:
        limit = caller.key.max_concurrent_jobs if caller.key else None
        if limit is None:
            return
        mine = jobs.tenant_jobs(self.store, caller.tenant)
        running = [j for j in mine if jobs.status_of(self.store, j["id"])["status"] in jobs.UNFINISHED]
        if len(running) >= limit:
            raise ApiError(
                429,
                f"tenant {caller.tenant!r} has {len(running)} unfinished jobs, its max_concurrent_jobs ({limit}). "
                "Wait for one to finish or cancel one.",
                type="rate_limit_error",
                code="max_concurrent_jobs",
            )

    async def create(self, request: Request, body: Any) -> dict[str, Any]:
        caller = self.caller(request)
        _, prepared = await asyncio.to_thread(self._prepare, caller, body)
        self._check_concurrency(caller)
        record = prepared["record"]
        await asyncio.to_thread(self._start, record, prepared["spec"])
        self.watching.add(record["id"])
        return jobs.job_object(self.store, record)

    def _start(self, record: dict[str, Any], spec: dict[str, Any]) -> None:
        job_id = record["id"]
        self.store.put_text(f"jobs/{job_id}/spec.yaml", yaml.safe_dump(spec, sort_keys=False))
        self.store.put(jobs.job_path(job_id), record)
        jobs.add_event(self.store, job_id, f"Created fine-tuning job: {job_id}.")
        jobs.set_status(self.store, job_id, "queued", "Files validated; job queued in Ray as " + record["submission_id"] + ".")
        self._submit(record)

    def _submit(self, record: dict[str, Any]) -> None:
        job_id = record["id"]
        try:
            ray_jobs.submit(
                self.ray(),
                record["submission_id"],
                self.store.uri("jobs", job_id, "spec.yaml"),
                self.store.uri("jobs", job_id),
                self.args.finetune.runtime_env,
                self.args.finetune.entrypoint_num_cpus,
            )
        except Exception as e:  # noqa: BLE001 - the reconcile loop retries a job Ray does not know
            logger.warning("rayfit: submitting %s failed (%s); the reconcile loop retries", job_id, e)

    def job(self, caller: Caller, job_id: str) -> dict[str, Any]:
        record = self.store.get(jobs.job_path(job_id)) if job_id.startswith("ftjob-") else None
        if record is None or record["tenant"] != caller.tenant:
            raise not_found("job", job_id)
        return record

    def get(self, request: Request, job_id: str) -> dict[str, Any]:
        return jobs.job_object(self.store, self.job(self.caller(request), job_id))

    def list(self, request: Request, after: str | None, limit: int, metadata: dict[str, str]) -> dict[str, Any]:
        caller = self.caller(request)
        mine = jobs.tenant_jobs(self.store, caller.tenant)
        found = [r for r in mine if all((r.get("metadata") or {}).get(k) == v for k, v in metadata.items())]
        return page([jobs.job_object(self.store, r) for r in found], after, limit)

    def cancel(self, request: Request, job_id: str) -> dict[str, Any]:
        record = self.job(self.caller(request), job_id)
        status = jobs.status_of(self.store, job_id)["status"]
        if status in jobs.FINISHED:
            raise _state_error(job_id, status, "an unfinished job can be cancelled")
        ray_jobs.stop(self.ray(), record["submission_id"])
        jobs.set_status(self.store, job_id, "cancelled", "Job cancelled: its Ray job was stopped.")
        return jobs.job_object(self.store, record)

    def pause(self, request: Request, job_id: str) -> dict[str, Any]:
        record = self.job(self.caller(request), job_id)
        status = jobs.status_of(self.store, job_id)["status"]
        if status not in ("queued", "running"):
            raise _state_error(job_id, status, "a queued or running job can be paused")
        self.store.put_text(f"jobs/{job_id}/pause", "pause requested\n")
        jobs.add_event(self.store, job_id, "Pause requested: the run checkpoints and stops.")
        if status == "queued":  # nothing trained yet: stopping loses nothing
            ray_jobs.stop(self.ray(), record["submission_id"])
            jobs.set_status(self.store, job_id, "paused")
        return jobs.job_object(self.store, record)

    def resume(self, request: Request, job_id: str) -> dict[str, Any]:
        record = self.job(self.caller(request), job_id)
        status = jobs.status_of(self.store, job_id)["status"]
        if status != "paused":
            raise _state_error(job_id, status, "a paused job can be resumed")
        self.store.delete(f"jobs/{job_id}/pause")
        record = {**record, "attempt": record["attempt"] + 1, "submission_id": f"{job_id}-{record['attempt'] + 1}"}
        self.store.put(jobs.job_path(job_id), record)
        jobs.set_status(self.store, job_id, "queued", f"Job resumed as Ray job {record['submission_id']}.")
        self._submit(record)
        return jobs.job_object(self.store, record)

    def events(self, request: Request, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.job(self.caller(request), job_id)
        data, more = jobs.events(self.store, job_id, after, limit)
        return {"object": "list", "data": data, "has_more": more}

    def checkpoints(self, request: Request, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.job(self.caller(request), job_id)
        return page([jobs.checkpoint_object(job_id, c) for c in jobs.checkpoints(self.store, job_id)], after, limit)

    def plan(self, request: Request, body: Any) -> dict[str, Any]:
        """POST /v1/rayfit/plan: the resolved hyperparameters, spec and planner estimate; nothing is created."""
        from cluster.planner import format_plan, make_plan
        from cluster.spec import validate_spec

        _, prepared = self._prepare(self.caller(request), body)
        spec = validate_spec(prepared["spec"])
        plan = make_plan(spec)
        hyper = prepared["record"]["hyperparameters"]
        return {
            "object": "rayfit.plan",
            "hyperparameters": hyper,
            "spec": prepared["spec"],
            "plan": plan.to_json(),
            "text": format_plan(plan),
        }

    def reconcile(self) -> None:
        """Jobs whose Ray job ended without their driver saying so are marked; jobs Ray never got are submitted."""
        for record in self.store.all("records/jobs"):
            status = jobs.status_of(self.store, record["id"])["status"]
            if status not in ("validating_files", "queued", "running"):
                continue
            self.watching.add(record["id"])
            found = ray_jobs.state(self.ray(), record["submission_id"])
            if found is None:
                self._submit(record)
                continue
            ray_status, message = found
            if ray_status not in ray_jobs.TERMINAL:
                continue
            now = jobs.status_of(self.store, record["id"])["status"]  # read again: the driver writes before it exits
            if now not in ("validating_files", "queued", "running"):
                continue
            if ray_status == "STOPPED":
                jobs.set_status(self.store, record["id"], "cancelled", "Job cancelled: its Ray job was stopped.")
            else:
                error = {"code": "job_failed", "message": f"the Ray job ended {ray_status} ({message[-500:]}).", "param": None}
                jobs.set_status(self.store, record["id"], "failed", f"Job failed: Ray job {ray_status}.", error=error)

    def newly_published(self) -> list[str]:
        """The models of watched jobs that have succeeded since the last call (each is then no longer watched)."""
        found = []
        for job_id in list(self.watching):
            state = jobs.status_of(self.store, job_id)
            if state["status"] in jobs.FINISHED:
                self.watching.discard(job_id)
                if state["status"] == "succeeded" and state.get("fine_tuned_model"):
                    found.append(state["fine_tuned_model"])
        return found

    async def reconcile_forever(self, preload) -> None:
        """Reconcile every `finetune.reconcile_s`; between passes, every WATCH_S, hand each model whose job has just
        succeeded to `preload` (an async function loading it into vLLM), so its first request does not wait for it."""
        last = float("-inf")
        while True:
            try:
                if time.monotonic() - last >= self.args.finetune.reconcile_s:
                    last = time.monotonic()
                    await asyncio.to_thread(self.reconcile)
                for name in await asyncio.to_thread(self.newly_published) if self.args.finetune.preload else []:
                    await preload(name)
            except Exception:  # noqa: BLE001 - one bad pass (storage or Ray briefly away) must not end the loop
                logger.exception("rayfit: reconciling fine-tuning jobs failed")
            await asyncio.sleep(min(WATCH_S, self.args.finetune.reconcile_s))


def _state_error(job_id: str, status: str, only: str) -> ApiError:
    return ApiError(400, f"job {job_id} is {status}; only {only}.", param="fine_tuning_job_id", code="invalid_job_state")
