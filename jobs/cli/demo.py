"""`rayfit demo`: the product as a service, on a private local Ray, offline.

Starts the app (`serve.app:build_app` with the embedded SmolLM2-135M-Instruct and a local storage folder, on
127.0.0.1), uploads the embedded construction FAQ through `POST /v1/files`, creates a job (the CPU template), follows
its events with progress, then asks the base and the `ft:` model the same question through the one endpoint and
prints both answers side by side. Times and answers go to benchmarks/results/demo.json. Everything it started is
shut down at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

from jobs.cli._show import duration

BASE = "embedded:smollm2-135m-instruct"
QUESTION = "What is a bygglov?"
REPO = Path(__file__).resolve().parents[2]
EPILOG = """example:
  rayfit demo                      # about 10 min on 2 CPU cores; the answers are printed side by side
  rayfit demo --question "Do I need a permit for a terrace?" --storage ~/rayfit-runs/service-demo/mine
"""


def register(subparsers) -> None:
    """Add `rayfit demo`."""
    p = subparsers.add_parser(
        "demo",
        help="fine-tuning as a service on a private local Ray: upload, train, ask base and ft: model",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--question", default=QUESTION, help=f"asked of both models (default: {QUESTION!r})")
    p.add_argument("--storage", help="the service's storage folder (default: a new one under ~/rayfit-runs/service-demo/)")
    p.add_argument("--num-cpus", type=int, default=6, help="logical CPUs of the local Ray (engine + 2 training workers)")
    p.add_argument("--max-tokens", type=int, default=96, help="answer length")
    p.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/demo.json")
    p.set_defaults(run=run)


def app_args(storage: str, ray_address: str) -> dict:
    """The Serve app's args: the embedded base on vLLM (fp32, eager: CPU), the fine-tuning API on `storage` with the
    default CPU template, jobs submitted to this Ray's job server with this checkout importable."""
    return {
        "model": BASE,
        "storage": storage,
        "dtype": "float32",
        "num_cpus": 1,
        "max_model_len": 2048,
        "max_ongoing_requests": 8,
        "vllm": {"enforce_eager": True, "cpu_kv_cache_gib": 1},
        "finetune": {
            "ray_address": ray_address,
            "runtime_env": {
                "env_vars": {
                    "PYTHONPATH": str(REPO),
                    "HF_HUB_OFFLINE": "1",
                    "RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"],
                    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                    "TOKENIZERS_PARALLELISM": "false",
                }
            },
        },
    }


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def run(args) -> int:
    """Start, upload, train, follow, ask, print, record; shut down whatever happens."""
    import ray
    from ray import serve

    from cluster.embedded import embedded_data_path, embedded_model_dir

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    storage = Path(args.storage or f"~/rayfit-runs/service-demo/{stamp}").expanduser()
    storage.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # one auth mode for this Ray, the app and the jobs' clients
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    embedded_model_dir()  # convert the GGUF once, before anything waits on it
    port, dashboard = free_port(), free_port()
    say(f"starting a private local Ray and the app on http://127.0.0.1:{port}/v1 (storage {storage})")
    try:
        start_ray(args.num_cpus, dashboard)
        head = f"http://127.0.0.1:{dashboard}"
        deploy(head, port, app_args(str(storage), head))
        times["app_start_s"] = time.perf_counter() - t0
        return _session(args, f"http://127.0.0.1:{port}/v1", storage, embedded_data_path("construction-faq"), times)
    finally:
        say("shutting down the app and the local Ray")
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()  # stops the processes this Ray started, by pid


def start_ray(num_cpus: int, dashboard: int, attempts: int = 2) -> None:
    """A private local Ray with its dashboard (Ray's job server, which the app submits jobs to, and Serve's REST
    API). Ray gives its raylet 30 s to register, which a busy machine can miss: then once more, after cleaning up.

    Its own temp dir: Ray's job supervisor gives each job's driver the address found in `<temp dir>/ray_current_cluster`,
    which any other local Ray on the machine using the default /tmp/ray overwrites.
    """
    import tempfile

    import ray

    # The jobs run `python -m jobs.finetune`: this interpreter's folder first, so `python` is the one with rayfit.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    temp = tempfile.mkdtemp(prefix="rfdemo-", dir="/tmp")  # short: Ray's socket paths must stay under 108 characters
    say(f"Ray's logs: {temp}/session_latest/logs")

    for attempt in range(attempts):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=dashboard,
                _temp_dir=temp,
                object_store_memory=300 * 1024**2,
                log_to_driver=False,
            )
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a slow start
            ray.shutdown()  # stops whatever this attempt started
            if attempt == attempts - 1 or "timed out during startup" not in str(e):
                raise
            say("the local Ray was slow to start (busy machine); trying once more")


def deploy(head: str, port: int, args: dict, timeout_s: float = 900) -> None:
    """Deploy `serve.app:build_app` with `args` as `serve deploy` and a KubeRay RayService do (Serve's REST API on
    the dashboard), then wait until the application runs."""
    import requests

    from cluster.errors import UserError

    config = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "rayfit",
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": args,
                "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}},
            }
        ],
    }
    requests.put(f"{head}/api/serve/applications/", json=config, timeout=60).raise_for_status()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        apps = requests.get(f"{head}/api/serve/applications/", timeout=60).json().get("applications", {})
        app = apps.get("rayfit") or {}
        if app.get("status") == "RUNNING":
            return
        if app.get("status") == "DEPLOY_FAILED":
            raise UserError(f"the app failed to deploy: {' '.join(str(app.get('message')).split())[-1500:]}")
        time.sleep(2)
    raise UserError(f"the app did not start in {timeout_s:.0f} s (see Ray's logs under /tmp/ray/session_latest/logs/serve).")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(args, url: str, storage: Path, faq: Path, times: dict[str, float]) -> int:
    """What a user does through the API, timed."""
    from openai import OpenAI

    from jobs.cli._events import follow
    from jobs.cli.files import upload_file

    client = OpenAI(base_url=url, api_key="none", max_retries=2, timeout=600)
    base = client.models.list().data[0].id
    say(f"app ready in {times['app_start_s']:.0f} s; serving {base!r}")

    t = time.perf_counter()
    uploaded = upload_file(client, faq)
    times["upload_s"] = time.perf_counter() - t
    say(f"uploaded {faq.name} as {uploaded.id} ({uploaded.bytes:,} bytes, checked by the service) in {times['upload_s']:.1f} s")

    t = time.perf_counter()
    job = client.fine_tuning.jobs.create(model=base, training_file=uploaded.id, suffix="faq", seed=0)
    say(f"created {job.id}: {job.status}; following its events")
    done = follow(client, job.id, poll_s=1.0, out=lambda line: print(f"  {line}", flush=True))
    seen_done = time.time()
    times["job_s"] = time.perf_counter() - t
    if done.status != "succeeded":
        why = f": {done.error.code}: {done.error.message}" if done.error and done.error.message else ""
        from cluster.errors import UserError

        raise UserError(f"job {done.id} ended {done.status}{why}; its events are above, its run under {storage}")
    say(f"{done.id} succeeded in {duration(times['job_s'])}: {done.fine_tuned_model}")

    answers, spans = {}, {}
    for model in (done.fine_tuned_model, base):  # the ft: model first: its first answer is the publish latency
        answers[model], spans[model] = _ask(client, model, args.question, args.max_tokens)
    first_token, first_answer_at = spans[done.fine_tuned_model]
    # finished_at: when the driver ended the job (whole seconds, so these may be up to 1 s long)
    times["success_to_first_token_s"] = first_token - done.finished_at
    times["success_to_first_answer_s"] = first_answer_at - done.finished_at
    times["seen_success_to_first_answer_s"] = first_answer_at - seen_done
    times["total_s"] = sum(times[k] for k in ("app_start_s", "upload_s", "job_s")) + first_answer_at - seen_done
    print(side_by_side(args.question, base, answers[base], done.fine_tuned_model, answers[done.fine_tuned_model]))
    say(
        f"job success -> the ft: model's first token {times['success_to_first_token_s']:.1f} s, its whole answer "
        f"{times['success_to_first_answer_s']:.1f} s; whole demo {duration(times['total_s'])}"
    )
    if not args.no_results:
        _record(args, times, base, done, answers, uploaded)
    return 0


def _ask(client, model: str, question: str, max_tokens: int) -> tuple[str, tuple[float, float]]:
    """One streamed chat answer with the sampling `python -m serve.ask` uses for this model (its generation_config sets
    none), and when its first token and its end arrived."""
    sampling = {"temperature": 0.3, "top_p": 0.9}
    penalty = {"repetition_penalty": 1.15}
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        seed=0,
        extra_body=penalty,
        stream=True,
        **sampling,
    )
    parts, first = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.time()
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts).strip(), (first or time.time(), time.time())


def side_by_side(question: str, left_name: str, left: str, right_name: str, right: str, width: int = 56) -> str:
    """Two answers in two columns under their model names."""
    cols = [textwrap.wrap(t, width) or [""] for t in (left, right)]
    heads = [textwrap.shorten(n, width, placeholder="...") for n in (left_name, right_name)]
    lines = [f"\nQ: {question}\n", f"{heads[0]:<{width}} | {heads[1]}", f"{'-' * width}-+-{'-' * width}"]
    for i in range(max(map(len, cols))):
        a = cols[0][i] if i < len(cols[0]) else ""
        b = cols[1][i] if i < len(cols[1]) else ""
        lines.append(f"{a:<{width}} | {b}".rstrip())
    return "\n".join(lines) + "\n"


def _record(args, times: dict[str, float], base: str, done, answers: dict[str, str], uploaded) -> None:
    try:
        from benchmarks.results import table, write_results
    except ImportError:  # an installed rayfit without the repository's benchmarks/
        say("benchmarks/ is not importable here (run from the repository root); results not written")
        return

    rounded = {k: round(v, 1) for k, v in times.items()}
    rows = [
        ["app start (Ray, Serve, vLLM engine)", f"{rounded['app_start_s']:.0f}"],
        ["upload + data check (503 rows)", f"{rounded['upload_s']:.1f}"],
        ["job create -> succeeded (data, plan, train, evaluate, gate, publish)", f"{rounded['job_s']:.0f}"],
        ["job success -> first token of the ft: model's answer", f"{rounded['success_to_first_token_s']:.1f}"],
        [f"job success -> its whole answer (up to {args.max_tokens} tokens)", f"{rounded['success_to_first_answer_s']:.1f}"],
        ["whole demo", f"{rounded['total_s']:.0f}"],
    ]
    write_results(
        "demo",
        runs=[{**rounded, "job": done.id, "file": uploaded.id, "question": args.question, "answers": answers}],
        summary={**rounded, "fine_tuned_model": done.fine_tuned_model, "base": base, "trained_tokens": done.trained_tokens},
        tables={"demo": table(["step", "seconds"], rows)},
        notes=f"2-core machine, 1-minute load average {os.getloadavg()[0]:.1f} when it ended; job success counts from "
        "the job's finished_at (whole seconds) to the ft: model's first streamed token and to the end of that answer.",
    )
