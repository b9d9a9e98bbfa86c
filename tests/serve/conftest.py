"""One local Ray + Serve and one vLLM engine for all serving tests: the tiny model with two trained adapters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import private_ray
from tests.serve.lora_fixtures import ANSWERS, as_checkpoint, serve_base, train_adapter
from tests.tiny_model import TOOLS_CHATML

ADMIN_ENV = "RAYFIT_TEST_ADMIN_KEY"
KEYS = {"admin": "sk-admin-0123", "tenant_a": "sk-tenant-a-4567", "tenant_b": "sk-tenant-b-89ab"}


@pytest.fixture(scope="session")
def lora_set(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """The serving base, adapter `alpha` as a rayfit checkpoint (manifest) and `bravo` as a plain PEFT folder. The base
    carries a chat template that renders tools (Hermes style), so the one engine also serves tool calls."""
    root = tmp_path_factory.mktemp("lora")
    base = serve_base(tiny_model_dir, root / "base", chat_template=TOOLS_CHATML)
    alpha = as_checkpoint(train_adapter(base, ANSWERS["alpha"], root / "runs" / "alpha" / "checkpoint_1", seed=0), str(base))
    bravo = train_adapter(base, ANSWERS["bravo"], root / "bravo", seed=1)
    (root / "adapter_root").mkdir()
    return {"base": base, "alpha": alpha, "bravo": bravo, "adapter_root": root / "adapter_root"}


@pytest.fixture(scope="package")
def serve_port():
    """A local Ray (3 CPUs, no dashboard) with Serve's HTTP proxy on 127.0.0.1 at a free port; torn down after."""
    import ray
    from ray import serve

    from serve.ask import free_port

    os.environ[ADMIN_ENV] = KEYS["admin"]  # before ray.init, so the replicas inherit it like a pod's secret env
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # shared CI boxes: do not pin a core
    port = free_port()
    private_ray(num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


# The tiny vLLM engine of every serving test. Capacity 16 running + 48 queued = 64: exactly the 64 concurrent
# requests of the load test fit, and more get 429. enforce_eager: no torch.compile, so it starts in seconds.
# tool_call_parser hermes reads the <tool_call> format of the base's template (tests/tiny_model.py TOOLS_CHATML).
TINY_ARGS = {
    "model_name": "tiny",
    "num_cpus": 0,
    "max_ongoing_requests": 16,
    "max_queued_requests": 48,
    "max_loaded_adapters": 4,
    "default_max_tokens": 16,
    "max_model_len": 512,
    "vllm": {"enforce_eager": True, "max_loras": 4, "tool_call_parser": "hermes"},
}


@pytest.fixture(scope="package")
def tiny_app(serve_port, lora_set, tmp_path_factory) -> str:
    """ONE vLLM engine for the package: the tiny base + adapters alpha and bravo + adapter_root, with an admin key
    (env) and two tenant keys (files)."""
    from ray import serve

    from serve.app import build_app

    secrets = tmp_path_factory.mktemp("secrets")
    for name in ("tenant_a", "tenant_b"):
        (secrets / name).write_text(KEYS[name] + "\n")
    args = {
        **TINY_ARGS,
        "model": str(lora_set["base"]),
        "adapters": {"alpha": str(lora_set["alpha"]), "bravo": str(lora_set["bravo"])},
        "adapter_root": str(lora_set["adapter_root"]),
        "api_keys": [
            {"env": ADMIN_ENV},
            {"file": str(secrets / "tenant_a"), "models": ["tiny", "alpha"]},
            {"file": str(secrets / "tenant_b"), "models": ["bravo"]},
        ],
    }
    serve.run(build_app(args), name="tiny", route_prefix="/tiny")
    return f"http://127.0.0.1:{serve_port}/tiny/v1"


def client(url: str, key: str | None = None):
    """The official OpenAI client, no retries (a retry would hide an error status)."""
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key or "none", max_retries=0, timeout=120)


def add_to_root(lora_set: dict, src: Path, name: str) -> None:
    """Copy an adapter into adapter_root under `name`, as a training run finishing after deployment would."""
    shutil.copytree(src, lora_set["adapter_root"] / name)
