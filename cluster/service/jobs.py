"""Job records, their status, events and checkpoints in the store, and the OpenAI objects shown for them.

A job is two records: `records/jobs/<id>.json`, written by the app when the job is created (and when it is resumed:
a new Ray submission), and `jobs/<id>/status.json`, the job's current state, written by its driver as it runs and by
the app when it cancels, pauses or finds the Ray job dead. Events and checkpoints are one file each, never rewritten.
"""

from __future__ import annotations

import time
from typing import Any

from cluster.service.store import Store, sortable_id

UNFINISHED = ("validating_files", "queued", "running", "paused")
FINISHED = ("succeeded", "failed", "cancelled")


def job_path(job_id: str) -> str:
    return f"records/jobs/{job_id}.json"


def status_of(store: Store, job_id: str) -> dict[str, Any]:
    """The job's current state (`status`, `error`, `fine_tuned_model`, ...)."""
    return store.get(f"jobs/{job_id}/status.json") or {"status": "validating_files"}


def set_status(store: Store, job_id: str, status: str, message: str | None = None, **fields: Any) -> dict[str, Any]:
    """Write the job's new state (fields not given are kept) and a status event."""
    state = {**status_of(store, job_id), "status": status, **fields}
    if status in FINISHED and not state.get("finished_at"):
        state["finished_at"] = int(time.time())
    store.put(f"jobs/{job_id}/status.json", state)
    add_event(store, job_id, message or f"Job status: {status}.", data={"status": status})
    return state


def add_event(
    store: Store, job_id: str, message: str, type: str = "message", data: Any = None, level: str = "info"
) -> dict[str, Any]:
    """Append one event (its own file, named by time so the folder lists in order)."""
    event = {
        "id": sortable_id("ftevent"),
        "object": "fine_tuning.job.event",
        "created_at": int(time.time()),
        "level": level,
        "message": message,
        "type": type,
        "data": data,
    }
    store.put(f"jobs/{job_id}/events/{event['id']}.json", event)
    return event


def events(store: Store, job_id: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """OpenAI's order: newest first; `after` is the last id of the previous page, so the page holds older events."""
    names = sorted(store.names(f"jobs/{job_id}/events"), reverse=True)
    if after:
        names = [n for n in names if n < after]
    page = [e for e in (store.get(f"jobs/{job_id}/events/{n}.json") for n in names[:limit]) if e]
    return page, len(names) > limit


def latest_metrics(store: Store, job_id: str) -> dict[str, Any] | None:
    """The newest `metrics` event's data (for trained tokens and the finish estimate)."""
    for name in sorted(store.names(f"jobs/{job_id}/events"), reverse=True):
        event = store.get(f"jobs/{job_id}/events/{name}.json")
        if event and event.get("type") == "metrics":
            return {**event["data"], "created_at": event["created_at"]}
    return None


def add_checkpoint(store: Store, job_id: str, record: dict[str, Any]) -> None:
    """One checkpoint record (`step`, `uri`, `metrics`, `fine_tuned_model_checkpoint`)."""
    store.put(f"jobs/{job_id}/checkpoints/{record['step']:08d}.json", record)


def checkpoints(store: Store, job_id: str) -> list[dict[str, Any]]:
    """The job's checkpoint records, newest first."""
    return list(reversed(store.all(f"jobs/{job_id}/checkpoints")))


def checkpoint_object(job_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's FineTuningJobCheckpoint."""
    m = record.get("metrics", {})
    return {
        "id": f"ftckpt-{job_id.removeprefix('ftjob-')}-{record['step']}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": record["created_at"],
        "fine_tuned_model_checkpoint": record["fine_tuned_model_checkpoint"],
        "fine_tuning_job_id": job_id,
        "step_number": record["step"],
        "metrics": {
            "step": float(record["step"]),
            "train_loss": m.get("train_loss", m.get("loss")),
            "valid_loss": m.get("eval_loss"),
            "full_valid_loss": m.get("eval_loss"),
        },
    }


def job_object(store: Store, record: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's FineTuningJob: the created record, its current state and the estimate from progress so far."""
    state = status_of(store, record["id"])
    hyper = {k: record["hyperparameters"][k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    # the method's own too (dpo's beta; reinforcement's eval_interval, eval_samples, ...); seed and max_steps are shown apart
    method_hyper = {k: v for k, v in record["hyperparameters"].items() if k not in ("seed", "max_steps")}
    kind, grader = record["method"], record.get("grader")
    estimated = None
    if state["status"] == "running":
        progress = latest_metrics(store, record["id"])
        if progress and progress.get("eta_s") is not None:
            estimated = int(progress["created_at"] + progress["eta_s"])
    return {
        "id": record["id"],
        "object": "fine_tuning.job",
        "created_at": record["created_at"],
        "model": record["model"],
        "organization_id": record["tenant"],
        "training_file": record["training_file"],
        "validation_file": record.get("validation_file"),
        "suffix": record.get("suffix"),
        "seed": record["hyperparameters"]["seed"],
        "metadata": record.get("metadata"),
        "hyperparameters": hyper,
        "method": {"type": kind, kind: {"hyperparameters": method_hyper, **({"grader": grader} if grader else {})}},
        "integrations": [],
        "status": state["status"],
        "error": state.get("error"),
        "fine_tuned_model": state.get("fine_tuned_model"),
        "trained_tokens": state.get("trained_tokens"),
        "finished_at": state.get("finished_at"),
        "estimated_finish": estimated,
        "result_files": state.get("result_files", []),
        "rayfit": {
            "ray_job_id": record["submission_id"],
            "max_steps": record["hyperparameters"].get("max_steps"),
            "init_from": record.get("init_from"),
            "run": record["run"],
            "attempt": record["attempt"],
            "paused_at_step": state.get("paused_at_step"),
        },
    }


def tenant_jobs(store: Store, tenant: str) -> list[dict[str, Any]]:
    """A tenant's job records, newest first."""
    return sorted((r for r in store.all("records/jobs") if r["tenant"] == tenant), key=lambda r: (-r["created_at"], r["id"]))
