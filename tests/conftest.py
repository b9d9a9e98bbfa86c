"""Shared fixtures: offline hub, quiet Ray workers, a tiny model, and the embedded model converted once."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from serve.ask import PROXY_READY_TIMEOUT

# Tests never reach a hub, and Ray Train workers' print patch floods logs (docs/platform-notes.md).
# One Ray auth mode for every in-process Ray session of the test run: a driver process that started Ray with token
# auth (the default) and later starts another local Ray with auth disabled gets every actor of the second one
# cancelled before it runs ("The actor never ran"). Tests that need token auth start their head in a subprocess.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread in the test processes and every process they start (drivers, one-process baselines, vLLM engines;
# Ray already gives its 1-CPU workers one). Set before torch is imported anywhere: the suite runs two test processes on
# two cores, so a second OpenMP thread mostly spins, waiting for the core the other test holds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# gcsfs (2026.x) by default asks GCS's gRPC control plane for each bucket's layout (hierarchical namespace, zonal),
# which the GCS emulator lacks: every first use of a bucket then waits 60 s and falls back to the plain JSON API.
# Read when gcsfs is imported, so it is set here, before any test imports it (docs/platform-notes.md).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# Every Ray the tests start (in process, `ray start` heads, cluster nodes) inherits this, so Serve's first HTTP proxy
# is not killed as unready while the other test process keeps both cores busy (serve/ask.py).
os.environ.setdefault(*PROXY_READY_TIMEOUT)

REPO = Path(__file__).resolve().parents[1]


def private_ray(**kwargs):
    """`ray.init(**kwargs)` for a fixture's own Ray, after shutting down one an earlier test left initialised in this
    process (a library call that auto-initialises Ray, say): a leftover must not fail every later module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    return ray.init(**kwargs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with a trained BPE tokenizer and ChatML template, saved like a hub checkpoint."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from GGUF once per cache."""
    from cluster.embedded import embedded_model_dir

    return embedded_model_dir()


# Packages whose tests share one expensive fixture (a session- or package-scoped Ray, Serve app or multi-node
# cluster), heaviest first. Under pytest-xdist (`make test`: -n 2) each is one unit of work, so one worker starts that
# fixture once; every other test file is a unit of its own. The heavy units are collected, so handed out, first, and
# the two workers end together instead of one waiting on the last big unit.
SHARED_FIXTURE_PACKAGES = ("service", "cluster/multinode", "cluster/training", "serve", "cluster/objectives")


def work_unit(path: str) -> str:
    """The unit a test file (its path from the repository root) runs in: its shared-fixture package, else itself."""
    path = path.removeprefix("tests/")
    return next((p for p in SHARED_FIXTURE_PACKAGES if path.startswith(p + "/")), path)


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduling with our units as scopes. (Its `--dist loadgroup` marks do not work with
    pytest 9.2, which no longer reads the `_nodeid` that xdist 3.8 rewrites to add the group.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid.split("::", 1)[0])

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    import torch

    rank = {p: i for i, p in enumerate(SHARED_FIXTURE_PACKAGES)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid.split("::", 1)[0]), len(rank)))  # stable: files keep order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if item.get_closest_marker("gpu"):  # not `"gpu" in item.keywords`: that also matches a checkout folder named gpu
            item.add_marker(skip)


@pytest.fixture
def moto_s3(monkeypatch, tmp_path):
    """A local S3 (moto server on 127.0.0.1) that s3fs and boto3 reach through the standard AWS variables.

    Yields a boto3 client. s3fs caches filesystem instances across tests, so the cache is cleared on the way in and
    out: otherwise a later test would talk to this server's dead port.
    """
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAYFIT_CACHE", str(tmp_path / "rayfit-cache"))
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield boto3.client("s3", endpoint_url=endpoint)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture
def gcs(monkeypatch, tmp_path):
    """A local Google Cloud Storage (gcp-storage-emulator, in memory, on 127.0.0.1) that gcsfs reaches through
    STORAGE_EMULATOR_HOST, without credentials. Yields `bucket(name) -> "gs://name"`, which creates the bucket.

    gcsfs caches filesystem instances like s3fs, so the cache is cleared on the way in and out.
    """
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    gcsfs = pytest.importorskip("gcsfs")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RAYFIT_CACHE", str(tmp_path / "rayfit-cache"))
    gcsfs.GCSFileSystem.clear_instance_cache()

    def bucket(name: str) -> str:
        gcsfs.GCSFileSystem().mkdir(name)
        return f"gs://{name}"

    try:
        yield bucket
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def object_store(request):
    """Each test that takes it runs twice: against moto's S3 server and against the GCS emulator, through the same
    fsspec calls rayfit makes. Gives `bucket(name) -> URI` (s3://name or gs://name), which creates the bucket."""
    if request.param == "gs":
        return request.getfixturevalue("gcs")
    s3 = request.getfixturevalue("moto_s3")

    def bucket(name: str) -> str:
        s3.create_bucket(Bucket=name)
        return f"s3://{name}"

    return bucket
