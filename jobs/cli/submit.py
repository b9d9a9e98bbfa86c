"""`rayfit submit|status|logs|stop|list`: run a spec on a Ray cluster through its job server, and watch it."""

from __future__ import annotations

import asyncio
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from cluster import storage
from cluster.errors import UserError
from cluster.spec import SpecError, load_spec
from jobs import ray_jobs

JOB_ID_HELP = "the Ray job id, or a fine-tuning API job id (ftjob-...: its newest attempt)"


def register(subparsers) -> None:
    """Add the `submit`, `status`, `logs`, `stop` and `list` subcommands."""
    p = subparsers.add_parser("submit", help="check a spec locally, then run it on a Ray cluster; prints the job id")
    p.add_argument("spec", help="path to the YAML job spec, inside the working dir")
    p.add_argument("--working-dir", default=".", help="folder uploaded as the job's working dir (default: .)")
    p.add_argument("--module", default="jobs.finetune", help="entrypoint module run as `python -m MODULE SPEC`")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="forward this local environment variable (by name; rayfit never prints its value, but Ray keeps it "
        "in the job's metadata: give secrets to the cluster itself, e.g. Kubernetes Secrets); repeatable",
    )
    p.add_argument(
        "--num-nodes", type=int, help="nodes the run will span (default: the alive nodes, +1 if the workers do not fit them)"
    )
    p.add_argument("--skip-data-check", action="store_true", help="do not run the data check locally first")
    p.add_argument("--job-id", help="submission id to use (default: Ray picks one)")
    p.add_argument("--follow", action="store_true", help="stream the job's log until it ends; exit 1 unless it succeeds")
    _address(p)
    p.set_defaults(run=submit)

    p = subparsers.add_parser("status", help="a job's status; a failed job prints the tail of its log and exits 1")
    p.add_argument("job_id", help=JOB_ID_HELP)
    _address(p)
    p.set_defaults(run=status)

    p = subparsers.add_parser("logs", help="print a job's log")
    p.add_argument("job_id", help=JOB_ID_HELP)
    p.add_argument("--follow", "-f", action="store_true", help="keep streaming until the job ends; exit 1 unless it succeeds")
    _address(p)
    p.set_defaults(run=logs)

    p = subparsers.add_parser("stop", help="stop a running job")
    p.add_argument("job_id", help=JOB_ID_HELP)
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    _address(p)
    p.set_defaults(run=stop)

    p = subparsers.add_parser("list", help="jobs on the cluster, newest first")
    _address(p)
    p.set_defaults(run=list_jobs)


def _address(p) -> None:
    p.add_argument("--address", help=f"Ray dashboard URL (default: $RAY_API_SERVER_ADDRESS, else {ray_jobs.DEFAULT_ADDRESS})")


def submit(args) -> int:
    """Validate the spec, check its data and storage, submit `python -m MODULE SPEC`, print the job id."""
    spec_path, working_dir = Path(args.spec), Path(args.working_dir)
    spec = load_spec(spec_path)
    rel_spec = ray_jobs.spec_in_working_dir(spec_path, working_dir)
    tokens = None if args.skip_data_check else _data_check(spec)
    client = ray_jobs.connect(args.address)
    nodes = [] if args.num_nodes else ray_jobs.alive_nodes(client)
    num_nodes = args.num_nodes or ray_jobs.nodes_for(spec, nodes)
    _plan_check(spec, nodes, tokens)
    problems = storage.shared_storage_problems(spec.output.storage, num_nodes)
    if problems:
        raise SpecError(problems, str(spec_path))
    if not storage.is_remote(spec.output.storage) and not Path(spec.output.storage).expanduser().is_absolute():
        _note(
            f"output.storage {spec.output.storage!r} is relative: the job resolves it inside its own copy of the "
            "working dir on the head node; give an absolute path or an s3:// URI to find the run afterwards."
        )
    env, sent = ray_jobs.runtime_env(working_dir.resolve(), args.env)
    if sent:
        _note(
            f"forwarding environment variables: {', '.join(sent)} (values not shown here, but Ray stores them in the "
            "job's metadata; for secrets, set them on the cluster instead)"
        )
    job_id = ray_jobs.call(
        _submit_job,
        client,
        entrypoint=f"python -m {args.module} {shlex.quote(rel_spec)}",
        runtime_env=env,
        submission_id=args.job_id,
        metadata={"rayfit_spec": rel_spec, "rayfit_run": spec.output.name},
    )
    print(job_id, flush=True)
    _note(f"submitted {job_id}; follow it with: rayfit logs {job_id} --follow")
    return _follow(client, job_id) if args.follow else 0


def _submit_job(client, **kwargs) -> str:
    """Submit through the client; Ray's upload errors (too large, missing folder) become UserErrors."""
    try:
        return client.submit_job(**kwargs)
    except ValueError as e:
        raise UserError(f"could not upload the working dir: {str(e).splitlines()[0]}") from None


def status(args) -> int:
    """Print the job's status; a failed or stopped job raises with Ray's message and the tail of its log."""
    client = ray_jobs.connect(args.address)
    args.job_id = ray_jobs.submission_of(client, args.job_id)
    info = ray_jobs.call(client.get_job_info, args.job_id)
    print(f"{args.job_id} {info.status.value}")
    if info.status.value in ("FAILED", "STOPPED"):
        raise ray_jobs.failure(client, args.job_id)
    return 0


def logs(args) -> int:
    """Print the job's log; with --follow, stream it until the job ends."""
    client = ray_jobs.connect(args.address)
    args.job_id = ray_jobs.submission_of(client, args.job_id)
    if args.follow:
        return _follow(client, args.job_id)
    print(ray_jobs.call(client.get_job_logs, args.job_id), end="")
    return 0


def stop(args) -> int:
    """Ask Ray to stop the job; with --wait, until it has."""
    client = ray_jobs.connect(args.address)
    args.job_id = ray_jobs.submission_of(client, args.job_id)
    stopped = ray_jobs.call(client.stop_job, args.job_id)
    print(f"{args.job_id} {'stop requested' if stopped else 'was not running'}")
    if args.wait:
        print(f"{args.job_id} {ray_jobs.wait(client, args.job_id)}")
    return 0


def list_jobs(args) -> int:
    """One line per job: id, status, start time, entrypoint."""
    client = ray_jobs.connect(args.address)
    jobs = sorted(ray_jobs.call(client.list_jobs), key=lambda j: j.start_time or 0, reverse=True)
    for job in jobs:
        started = (
            datetime.fromtimestamp(job.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if job.start_time else "-"
        )
        print(f"{job.submission_id or job.job_id}\t{job.status.value}\t{started}\t{job.entrypoint}")
    return 0


def _follow(client, job_id: str) -> int:
    """Stream the log until the job ends; a job that did not succeed raises with its tail."""

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    import aiohttp

    try:
        ray_jobs.call(asyncio.run, stream())
    except aiohttp.ClientError as e:  # the log stream is a websocket; its errors are not requests' ones
        raise UserError(f"lost the log stream of job {job_id}: {e}; `rayfit status {job_id}` asks again.") from None
    final = ray_jobs.wait(client, job_id)
    if final != "SUCCEEDED":
        raise ray_jobs.failure(client, job_id)
    _note(f"job {job_id} SUCCEEDED")
    return 0


def _data_check(spec) -> int:
    """Run the data layer's check on this machine before anything is uploaded; returns the training tokens."""
    from cluster.data import check_data

    report = check_data(spec)
    print(report.to_table(), file=sys.stderr)
    _note("data check passed.")
    return report.train_tokens


def _plan_check(spec, nodes: list[dict], dataset_tokens: int | None) -> None:
    """Refuse, before any GPU is held, a spec whose plan does not fit the cluster's GPUs (plan.enforce: false skips)."""
    from cluster.planner import check_fit, format_plan, gpu_from_cluster_resources, make_plan

    resources: dict[str, float] = {}
    for node in nodes:
        for key, value in node.get("resources_total", {}).items():
            resources[key] = resources.get(key, 0.0) + float(value)
    plan = make_plan(spec, gpu=gpu_from_cluster_resources(resources), dataset_tokens=dataset_tokens)
    print(format_plan(plan), file=sys.stderr)
    check_fit(plan, spec)


def _note(message: str) -> None:
    print(f"rayfit: {message}", file=sys.stderr, flush=True)
