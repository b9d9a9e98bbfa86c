"""Talking to a Ray cluster's job server from a laptop: connect (with token auth), build the runtime env, wait, tail logs.

The `rayfit submit|status|logs|stop|list` commands in jobs/cli/submit.py are thin over these functions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cluster.errors import UserError
from cluster.noise import PROCESS_ENV

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Nothing is forwarded unless asked: Ray keeps a job's runtime_env env_vars in its job metadata (the dashboard and
# `ray job list` show them), so secrets belong in the cluster's own environment (Kubernetes Secrets in k8s/base).
# Always set for the job: the same quiet settings as a local run (cluster.noise).
JOB_ENV = dict(PROCESS_ENV)
# Also in .rayignore; repeated here so `rayfit submit` from a folder without one still skips them.
WORKING_DIR_EXCLUDES = [
    ".git/",
    ".venv/",
    "venv/",
    "**/__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    "rayfit-runs/",
    "outputs/",
    "*.egg-info/",
    "build/",
    "dist/",
    ".cache/",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def resolve_address(address: str | None) -> str:
    """The job server address: the flag, else RAY_API_SERVER_ADDRESS, else an http RAY_ADDRESS, else localhost."""
    if address:
        return address
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return DEFAULT_ADDRESS


def auth_token() -> str | None:
    """The Ray auth token from RAY_AUTH_TOKEN, the file in RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token; None if absent."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    return None


def connect(address: str | None):
    """A JobSubmissionClient for `address`, sending the auth token when one exists; UserError when unreachable."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    token = auth_token()
    # Sent explicitly: Ray adds the header only when this process's RAY_AUTH_MODE is token, and a laptop rarely sets it.
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except ConnectionError:
        raise UserError(
            f"cannot reach the Ray job server at {address}: nothing answered. Start the cluster, or forward "
            "its dashboard port (kubectl port-forward svc/rayfit-cluster-head-svc 8265:8265), or pass --address "
            "/ set RAY_API_SERVER_ADDRESS."
        ) from None
    except AuthenticationError:
        raise UserError(
            f"the Ray cluster at {address} needs an auth token and {'refused ours' if token else 'none was found'}. "
            "Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token."
        ) from None
    except (RuntimeError, ValueError) as e:
        raise UserError(f"the Ray job server at {address} did not accept the connection: {str(e).splitlines()[0]}") from None


def call(fn, *args, **kwargs):
    """Run one job-server request, turning connection, auth and unknown-job failures into one-line UserErrors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args, **kwargs)
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise UserError("lost the connection to the Ray job server; is the head still running?") from None
    except AuthenticationError:
        raise UserError("the Ray job server refused our auth token; set RAY_AUTH_TOKEN to the cluster's token.") from None
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        if "404" in first or "does not exist" in first:
            raise UserError(f"no such job on this cluster ({first[:200]}); `rayfit list` shows the jobs it has.") from None
        raise UserError(f"the Ray job server refused the request: {first[:300]}") from None


def alive_nodes(client) -> list[dict]:
    """The cluster's alive nodes as the dashboard's state API lists them (with `resources_total`)."""
    r = call(client._do_request, "GET", "/api/v0/nodes?limit=10000&detail=true")
    if r.status_code != 200:
        raise UserError(f"could not list the cluster's nodes (HTTP {r.status_code}); pass --num-nodes to skip the question.")
    return [row for row in r.json()["data"]["result"]["result"] if row.get("state") == "ALIVE"]


def nodes_for(spec, nodes: list[dict]) -> int:
    """Nodes the run will span: the alive ones, plus one when they lack the CPUs or GPUs the workers ask for, since
    an autoscaling cluster (KubeRay's head has num-cpus 0) then adds worker nodes that must see the same storage."""

    def total(key):
        return sum(float(n.get("resources_total", {}).get(key, 0)) for n in nodes)

    c = spec.cluster
    short = c.num_workers * c.cpus_per_worker > total("CPU") or c.num_workers * c.gpus_per_worker > total("GPU")
    return len(nodes) + (1 if short else 0)


def runtime_env(working_dir: Path, secret_names: list[str], excludes: list[str] | None = None) -> tuple[dict, list[str]]:
    """The job's runtime env (working dir, excludes, env vars) and the secret names actually forwarded (set locally)."""
    sent = [name for name in dict.fromkeys(secret_names) if os.environ.get(name)]
    env_vars = {**JOB_ENV, **{name: os.environ[name] for name in sent}}
    env = {"working_dir": str(working_dir), "excludes": [*WORKING_DIR_EXCLUDES, *(excludes or [])], "env_vars": env_vars}
    return env, sent


def spec_in_working_dir(spec: Path, working_dir: Path) -> str:
    """The spec's path relative to the working dir, as the job will see it; UserError when it is outside."""
    try:
        return spec.resolve().relative_to(working_dir.resolve()).as_posix()
    except ValueError:
        raise UserError(
            f"the spec {spec} is outside the working dir {working_dir}, so the job would not see it; "
            "move it under the working dir or pass --working-dir a folder that contains it."
        ) from None


def log_tail(client, job_id: str, lines: int = 30) -> str:
    """The last `lines` lines of a job's log."""
    text = call(client.get_job_logs, job_id)
    return "\n".join(text.rstrip().splitlines()[-lines:])


def submission_of(client, job_id: str) -> str:
    """The Ray job `rayfit status|logs|stop JOB_ID` acts on: JOB_ID itself, or for the fine-tuning API's job id
    (`ftjob-...`) the Ray job of its newest attempt (`ftjob-...-N`, found by the metadata the service submits it with)."""
    from cluster.service.ray_jobs import JOB_KEY

    if not job_id.startswith("ftjob-") or job_id.rsplit("-", 1)[-1].isdigit():
        return job_id
    attempts = [j.submission_id for j in call(client.list_jobs) if (j.metadata or {}).get(JOB_KEY) == job_id]
    return max(attempts, key=lambda s: int(s.rsplit("-", 1)[-1]), default=job_id)


def wait(client, job_id: str, timeout_s: float | None = None, poll_s: float = 2.0) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED (or the timeout passes); returns the last status."""
    start = time.monotonic()
    while True:
        status = str(call(client.get_job_status, job_id).value)
        if status in TERMINAL or (timeout_s is not None and time.monotonic() - start > timeout_s):
            return status
        time.sleep(poll_s)


def failure(client, job_id: str) -> UserError:
    """A UserError for a job that did not succeed: its status, Ray's message, and the tail of its log."""
    info = call(client.get_job_info, job_id)
    tail = log_tail(client, job_id)
    message = (info.message or "").strip().splitlines()
    return UserError(
        f"job {job_id} {info.status.value}: {message[0] if message else 'no message'}\n--- last lines of its log ---\n{tail}"
    )
