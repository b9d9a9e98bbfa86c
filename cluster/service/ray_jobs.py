"""Each fine-tuning job is a Ray job: submitted, stopped and watched through Ray's JobSubmissionClient, on the same
`python -m jobs.finetune SPEC` entrypoint `ray job submit` runs, so `ray job logs` and `rayfit logs` reach its log."""

from __future__ import annotations

import os
import shlex
from typing import Any

from cluster.noise import PROCESS_ENV

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_KEY = "rayfit_service_job"  # the Ray job's metadata: which fine-tuning job it is an attempt of


def job_server(address: str | None) -> str:
    """The job server: the args' address, RAY_API_SERVER_ADDRESS, or this cluster's dashboard (inside a replica)."""
    if address:
        return address
    if os.environ.get("RAY_API_SERVER_ADDRESS"):
        return os.environ["RAY_API_SERVER_ADDRESS"]
    import ray._private.worker

    url = ray._private.worker.get_dashboard_url()
    return url if url.startswith("http") else f"http://{url}"


def client(address: str):
    """A JobSubmissionClient, with Ray's auth token when the cluster uses one (RAY_AUTH_TOKEN)."""
    from ray.job_submission import JobSubmissionClient

    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"} if token else None)


def entrypoint(spec_uri: str, job_uri: str) -> str:
    """The command the Ray job runs."""
    return f"python -m jobs.finetune {shlex.quote(spec_uri)} --service-job {shlex.quote(job_uri)}"


def submit(jobs, submission_id: str, spec_uri: str, job_uri: str, runtime_env: dict[str, Any], num_cpus: float) -> str:
    """Submit (idempotent: a submission id Ray already knows is left as it is); returns the submission id."""
    env = {**runtime_env, "env_vars": {**PROCESS_ENV, **runtime_env.get("env_vars", {})}}
    if state(jobs, submission_id) is not None:
        return submission_id
    return jobs.submit_job(
        entrypoint=entrypoint(spec_uri, job_uri),
        submission_id=submission_id,
        runtime_env=env,
        entrypoint_num_cpus=num_cpus,
        metadata={JOB_KEY: job_uri.rsplit("/", 1)[-1]},
    )


def state(jobs, submission_id: str) -> tuple[str, str] | None:
    """(Ray status, message) of a submission, or None when Ray does not know it."""
    try:
        info = jobs.get_job_info(submission_id)
    except RuntimeError:  # the job server answers 404 for an unknown id
        return None
    return str(info.status.value if hasattr(info.status, "value") else info.status), info.message or ""


def stop(jobs, submission_id: str) -> None:
    """Stop the Ray job (its driver, and with it the training workers it owns); nothing when it already ended."""
    found = state(jobs, submission_id)
    if found and found[0] not in TERMINAL:
        jobs.stop_job(submission_id)
