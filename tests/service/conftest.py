"""One Ray head with its job server, one Serve app with the fine-tuning API (storage in a temporary folder), the tiny
model served by vLLM, two tenants' keys, and the official `openai` client: shared by every service test module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import private_ray
from tests.jobs.test_submit_e2e import BIN, REPO, _stop, _wait_for_job_server, free_ports
from tests.serve.lora_fixtures import QUESTION, serve_base

KEYS = {"tenant_a": "sk-svc-a-0123", "tenant_b": "sk-svc-b-4567", "tenant_c": "sk-svc-c-8901"}
ANSWER = "A building permit is required."
# The template every job on the tiny base starts from: 1 CPU worker, LoRA, 60 steps, a checkpoint every 30.
TEMPLATE = {
    "model": {"base": "set-by-the-service", "method": "lora", "dtype": "float32", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
    "data": {"train": [{"path": "set-by-the-service"}], "eval_split": 0.0, "max_seq_len": 256, "packing": False},
    "train": {
        "max_steps": 60,
        "learning_rate": 3e-3,
        "lr_scheduler": "constant",
        "warmup_steps": 0,
        "logging_steps": 5,
        "eval_steps": None,
        "save_steps": 30,
        "gradient_checkpointing": False,
        "micro_batch_size": 4,
    },
    "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
    "output": {"storage": "set-by-the-service", "name": "set-by-the-service"},
}
ENGINE = {
    "model_name": "tiny",
    "num_cpus": 0,
    "max_ongoing_requests": 16,
    "max_queued_requests": 48,
    "default_max_tokens": 16,
    "max_model_len": 256,
    "vllm": {"enforce_eager": True, "max_loras": 4, "max_lora_rank": 8},
}


def training_rows(answer: str = ANSWER, n: int = 8) -> str:
    """JSONL: `n` phrasings of QUESTION, all answered `answer` (distinct rows, so the data check keeps them all)."""
    questions = [QUESTION] + [f"{QUESTION[:-1]}, please {i}?" for i in range(1, n)]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]} for q in questions]
    return "".join(json.dumps(r) + "\n" for r in rows)


def preference_rows(chosen: str = ANSWER, rejected: str = "No permit is needed.", n: int = 8) -> str:
    """JSONL in OpenAI's DPO format: `n` phrasings of QUESTION, `chosen` preferred over `rejected`."""
    questions = [QUESTION] + [f"{QUESTION[:-1]}, please {i}?" for i in range(1, n)]
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": q}]},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}],
        }
        for q in questions
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="package")
def ray_head():
    """`ray start --head` with the dashboard (Ray's job server) on free 127.0.0.1 ports; stopped by pid after this
    package's tests (package scope: an idle head's daemons, Serve controller and proxy keep using CPU until stopped)."""
    from torch.utils.cpp_extension import get_default_build_root

    temp = Path(tempfile.mkdtemp(prefix="rfsvc-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    gcs, dashboard, client, agent = free_ports(4)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(temp),
        # DeepSpeed's CPU ops are compiled into torch's extension cache under HOME: this head shares the test run's
        # cache instead of compiling them again in its own HOME (two compiler runs of about 30 CPU-s each).
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root(),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    log = open(temp / "head.log", "w")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--dashboard-port", str(dashboard)]
    cmd += ["--num-cpus", "4", "--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1"]
    cmd += ["--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent), "--temp-dir", str(temp)]
    cmd += ["--object-store-memory", str(300 * 1024**2), "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_job_server(address, proc, temp / "head.log")
        yield {"gcs": f"127.0.0.1:{gcs}", "jobs": address, "temp": temp}
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="package")
def service(ray_head, tiny_model_dir, tmp_path_factory):
    """The app with `storage`: tenants a (1 concurrent job, 1 MB stored), b and c, jobs submitted to the head's job
    server with this checkout on PYTHONPATH (the `finetune.runtime_env` arg). Yields a dict of what tests need."""
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.ask import free_port

    root = tmp_path_factory.mktemp("svc")
    base = serve_base(tiny_model_dir, root / "base")
    secrets = root / "secrets"
    secrets.mkdir()
    for name, key in KEYS.items():
        (secrets / name).write_text(key + "\n")
    storage = root / "storage"
    port = free_port()
    args = {
        **ENGINE,
        "model": str(base),
        "storage": str(storage),
        "api_keys": [
            {"file": str(secrets / "tenant_a"), "max_concurrent_jobs": 1, "max_stored_bytes": 1_000_000},
            {"file": str(secrets / "tenant_b")},
            {"file": str(secrets / "tenant_c")},  # test_pause_and_gate.py: its paused job blocks no one else
        ],
        "finetune": {
            "bases": {"tiny": TEMPLATE},
            "ray_address": ray_head["jobs"],
            "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}},
            "entrypoint_num_cpus": 0.5,
            "max_upload_bytes": 200_000,
            "reconcile_s": 2,
        },
    }
    private_ray(address=ray_head["gcs"], runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="svc", route_prefix="/svc")
        yield {"url": f"http://127.0.0.1:{port}/svc/v1", "storage": storage, "args": args, "head": ray_head}
    finally:
        serve.shutdown()
        ray.shutdown()


def client(url: str, tenant: str = "tenant_a"):
    """The official OpenAI client as a tenant, without retries (a retry would hide an error status)."""
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=KEYS[tenant], max_retries=0, timeout=120)


def wait_for(job_id: str, api, statuses: tuple[str, ...], timeout_s: float = 600):
    """Poll the job until its status is one of `statuses`; fails with its newest events otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = api.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1)
    events = [e.message for e in api.fine_tuning.jobs.list_events(job_id, limit=20).data]
    pytest.fail(f"job {job_id} is {job.status} after {timeout_s} s, not {statuses}; newest events: {events}")


def ask(api, model: str, question: str = QUESTION) -> str:
    """The greedy answer of `model` to `question` through chat.completions."""
    out = api.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=16)
    return out.choices[0].message.content
