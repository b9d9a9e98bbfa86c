"""A multi-node world on one machine: Ray nodes started with `ray start`, each with its own temporary folder and
cache (so no file passes between "nodes" except through storage), and an S3 server on 127.0.0.1.

Every process is started here and stopped here by its pid, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from tests.cluster.training.conftest import free_port

REPO = Path(__file__).resolve().parents[3]
BUCKET = "rayfit"


class Cluster:
    """Ray nodes on this machine; `add_node` starts one, `lose_node` takes one away as a lost machine would."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[tuple[str, subprocess.Popen]] = []
        self.lost: set[str] = set()  # nodes taken away (lose_node) or replaced (heal)

    def node_env(self, name: str) -> dict[str, str]:
        """The environment of a node's processes (and so of its Ray workers): its own TMPDIR and rayfit cache."""
        tmp = self.root / name
        (tmp / "tmp").mkdir(parents=True, exist_ok=True)
        return {**self.env, "TMPDIR": str(tmp / "tmp"), "RAYFIT_CACHE": str(tmp / "cache")}

    def add_node(self, cpus: int = 2) -> str:
        """Start a node (the head first) and wait until Ray lists it alive, with every other running node and no
        node this harness took away; returns its name (also its Ray node name)."""
        import psutil  # noqa: F401  (lose_node needs it; fail early if missing)

        name = f"node{len(self.nodes)}"
        args = [
            "ray",
            "start",
            "--block",
            f"--node-name={name}",
            f"--num-cpus={cpus}",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        if not self.nodes:
            args += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.root / 'ray'}",
            ]
        else:
            args += [f"--address={self.address}"]
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - the node writes to it after this returns
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / args[0]), *args[1:]],
            env=self.node_env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append((name, proc))
        self.wait_for_nodes()
        return name

    def running(self) -> set[str]:
        """Names of the nodes whose `ray start --block` still runs (it exits when its raylet dies)."""
        return {name for name, proc in self.nodes if proc.poll() is None}

    def alive_nodes(self) -> set[str] | None:
        """Names of the nodes Ray's GCS lists alive; None when it cannot be asked. Asked through a GCS client in this
        process (no driver is started, so polling costs next to nothing on a busy 2-core box)."""
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        try:
            nodes = GcsClient(address=self.address).get_all_node_info(timeout=10).values()
        except Exception:  # the head is still starting, or busy: asked again
            return None
        return {n.node_name for n in nodes if n.state == GcsNodeInfo.ALIVE}

    def wait_for_nodes(self, timeout: float = 120) -> None:
        """Wait until Ray lists exactly the running nodes alive: a node just started has registered, and a node just
        lost is no longer counted (its death is noticed by the GCS's health checks, seconds later). Counting alone
        passed too early, with the lost node still listed and its replacement not yet."""
        deadline = time.time() + timeout
        while (alive := self.alive_nodes()) != self.running():
            assert time.time() < deadline, (
                f"Ray lists {alive} alive, the harness runs {self.running()}; see {self.root}/node*.log"
            )
            time.sleep(1)

    def heal(self, count: int = 2) -> None:
        """Start nodes until `count` run, and wait until Ray lists them: a test starts with its two nodes even when an
        earlier test failed before giving back the node it took, or a node's raylet ended by itself (seen once on
        this 2-core machine under load), which is warned about with the node's log."""
        for name, proc in self.nodes:
            if proc.poll() is not None and name not in self.lost:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
                said = f"multinode harness: {name} ended by itself (exit {proc.returncode}); replaced. Its log:\n{tail}"
                warnings.warn(said, stacklevel=2)
                self.lost.add(name)
        while len(self.running()) < count:
            self.add_node()
        self.wait_for_nodes()

    def lose_node(self, name: str) -> None:
        """Node `name` disappears as a reclaimed spot machine does: its raylet is SIGKILLed first, then every other
        process of the node (its Ray workers included)."""
        import psutil

        proc = dict(self.nodes)[name]
        children = psutil.Process(proc.pid).children(recursive=True)
        raylets = [p for p in children if p.name() == "raylet"]
        assert raylets, f"no raylet under {name}"
        for p in raylets:
            p.kill()
        psutil.wait_procs(raylets, timeout=30)  # the raylet is gone before the rest of the node goes
        for p in children:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:  # `ray start --block` may have ended already, on seeing its raylet die
            proc.kill()
        proc.wait()
        self.lost.add(name)
        self.wait_for_nodes()

    def stop(self) -> None:
        """Stop every node: SIGTERM to each `ray start --block` process at once (each stops its own children), up to
        10 s for them all, then SIGKILL to whatever of the node is left."""
        import psutil

        procs = []
        for _, proc in self.nodes:
            try:
                node = psutil.Process(proc.pid)
                procs += [node, *node.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        _, left = psutil.wait_procs(procs, timeout=10)
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for _, proc in self.nodes:
            proc.wait()


@pytest.fixture(scope="package")
def s3_endpoint():
    """An S3 server (moto) on 127.0.0.1 with one bucket, for the whole package."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="package")
def two_nodes(s3_endpoint):
    """A Ray head and one more node, each with 2 CPUs and its own TMPDIR and cache; stopped by pid at the end."""
    root = Path(tempfile.mkdtemp(prefix="rfmn-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        # The GCS asks each raylet every second (Ray's default: 3 s) whether it lives, so a lost node is declared dead
        # after 5 failed asks, about 5 s instead of 15 s. A slow answer is still awaited for 10 s (the default).
        "RAY_health_check_period_ms": "1000",
        # After a node is lost, Ray Train's controller may still count it (its view of the nodes is refreshed every
        # 20 s) and wait for room for the old number of workers; it gives up and decides again after this long
        # (Ray's default: 60 s; a retry that costs no failure). An elastic run then shrinks ~50 s sooner.
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint,
    }
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(root, env)
    try:
        cluster.add_node()
        cluster.add_node()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def s3fs_client(endpoint: str):
    """An s3fs filesystem on the test's S3 server (not cached, so no other test's server is reused)."""
    import s3fs

    return s3fs.S3FileSystem(
        key="x", secret="x", client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}, skip_instance_cache=True
    )
