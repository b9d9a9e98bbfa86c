"""One elastic run on two nodes (min_workers 1) that loses a node, goes on with one worker, gets the node back and
grows to two again: the "goes on" and the "grows back" tests inspect it."""

from __future__ import annotations

import contextlib
import json
import re

import psutil
import pytest
import yaml

from tests.cluster.multinode.conftest import BUCKET, s3fs_client
from tests.cluster.multinode.test_two_nodes import (
    ELASTIC_STEPS,
    STEPS,
    Drivers,
    _baseline,
    _losses,
    _recorded,
    _spec,
    _wait_for,
)

pytestmark = pytest.mark.slow


def _train_worker(cluster):
    """The one Ray Train worker process running on the cluster's nodes."""

    def is_worker(p) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE and "RayTrainWorker" in " ".join(p.cmdline())
        except psutil.Error:  # ended meanwhile
            return False

    running = [psutil.Process(proc.pid) for name, proc in cluster.nodes if name in cluster.running()]
    workers = [p for node in running for p in node.children(recursive=True) if is_worker(p)]
    assert len(workers) == 1, f"expected the one Ray Train worker, found {workers}"
    return workers[0]


def _written(fs, run: str) -> int:
    """The step of the newest checkpoint folder in storage, complete or not (0: none)."""
    fs.invalidate_cache()
    return max((int(m[1]) for p in fs.ls(run) if (m := re.search(r"checkpoint_(\d{8})$", p))), default=0)


def _ended(p) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def elastic_run(two_nodes, s3_endpoint, tiny_model_dir, tmp_path_factory) -> dict:
    """One elastic run (min_workers 1) that both elastic tests inspect. It starts on the two nodes; once a checkpoint
    is recorded a node is lost with no replacement and the run goes on with one worker; once that worker has recorded
    checkpoint STEPS (and one the two workers never began) the node comes back, and Ray Train's resize check (every
    resize_check_s) restarts the run on two workers, from the newest checkpoint, resharded. The harness has its two
    nodes again at the end.

    The worker left is held (SIGSTOP) from then until the resize restart ends it, so the run cannot finish
    before Ray Train sees the node (up to 20 s after it joins: DefaultAutoscalingCoordinator.TICK_INTERVAL_S). To Ray
    it is a worker busy with a long step: its health checks go unanswered, which fails it only after 10 minutes
    (RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S), so a restart well before that is the resize."""
    two_nodes.heal()
    tmp = tmp_path_factory.mktemp("elastic")
    fs = s3fs_client(s3_endpoint)
    run = f"{BUCKET}/runs/elastic"
    spec = _spec(tiny_model_dir, "elastic", min_workers=1, cpus_per_worker=2, resize_check_s=2)  # 1 worker per node
    spec["train"]["max_steps"] = ELASTIC_STEPS
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    drivers, held = Drivers(two_nodes, tmp), None
    try:
        driver, log = drivers.start(spec_path)
        _wait_for(lambda: _recorded(fs, run), driver, log)
        two_nodes.lose_node(two_nodes.nodes[-1][0])  # the node holding rank 1; nothing replaces it for now
        two_worker_steps = _written(fs, run)
        _wait_for(lambda: STEPS in _recorded(fs, run), driver, log)
        shrunk = {  # read now: keep_checkpoints 2 deletes it later
            "log": log.read_text(),
            "manifest": json.loads(fs.cat(f"{run}/checkpoint_{STEPS:08d}/manifest.json")),
        }
        # The run grows back from a checkpoint the two workers never began. (One they had begun kept their rank-1
        # files when the one worker wrote it again, and resuming skipped it, until an attempt cleared the folders past
        # its resume point: cluster.run_folder.clear_past, tested in tests/cluster/training/test_units.py.)
        _wait_for(lambda: _recorded(fs, run)[-1] > two_worker_steps, driver, log)
        held = _train_worker(two_nodes)
        held.suspend()
        two_nodes.add_node()  # capacity returns
        _wait_for(lambda: _ended(held), driver, log, timeout=300)  # the resize restart ended the held worker
        out = drivers.finish(driver, log)
        fs.invalidate_cache()
        return {
            "run": run,
            "spec": spec,
            "out": out,
            "shrunk": shrunk,
            "last_manifest": json.loads(fs.cat(f"{run}/checkpoint_{ELASTIC_STEPS:08d}/manifest.json")),
            "history": json.loads(fs.cat(f"{run}/log_history.json")),
        }
    finally:
        if held is not None and not _ended(held):
            with contextlib.suppress(psutil.NoSuchProcess):
                held.resume()  # for Ray to end it with its run
        drivers.stop()
        two_nodes.heal()


def test_elastic_run_goes_on_with_the_node_left(two_nodes, elastic_run, s3_endpoint, tmp_path):
    """A node lost with no replacement: an elastic run (min_workers 1) goes on with one worker, its ZeRO-3 checkpoint
    resharded and its gradient accumulation doubled, and its losses stay the two-node run's. Over 60 s: it pays for
    the elastic run both elastic tests inspect (a two-node run that loses a node, then gets it back)."""
    fs = s3fs_client(s3_endpoint)
    run, out = elastic_run["run"], elastic_run["out"]
    assert "training on 1 of 2 workers: gradient accumulation 2 (was 1), global batch 8 rows" in out, out[-3000:]
    resumed = re.findall(rf"resuming from s3://{run}/checkpoint_(\d{{8}}) \(written by 2 workers; resharded for 1\)", out)
    assert resumed and int(resumed[0]) < STEPS, out[-3000:]
    manifest = elastic_run["shrunk"]["manifest"]  # checkpoint STEPS, written by the one worker left
    assert manifest["world_size"] == 1 and len(manifest["nodes"]) == 1
    assert manifest["resumed_from"]["world_size"] == 2 and manifest["resumed_from"]["resharded_for"] == 1
    losses = _losses(elastic_run["history"])
    expected = _baseline(two_nodes, fs, run, elastic_run["spec"], tmp_path, ELASTIC_STEPS)
    assert sorted(losses) == sorted(expected)
    for step, loss in losses.items():
        assert abs(loss - expected[step]) <= 1e-3, (step, loss, expected[step])


def test_elastic_run_grows_back_when_a_node_returns(elastic_run):
    """An elastic run training on 1 worker (its second node lost): when the node returns, Ray Train's resize check
    restarts it on 2 from the newest checkpoint, resharded (capacity returning)."""
    run, out, steps = elastic_run["run"], elastic_run["out"], ELASTIC_STEPS
    assert "training on 1 of 2 workers" in elastic_run["shrunk"]["log"]
    grown = re.findall(rf"resuming from s3://{run}/checkpoint_(\d{{8}}) \(written by 1 worker; resharded for 2\)", out)
    assert grown and int(grown[0]) < steps, out[-3000:]
    manifest = elastic_run["last_manifest"]
    assert manifest["world_size"] == 2 and len(manifest["nodes"]) == 2
    assert manifest["resumed_from"] == {
        "checkpoint": f"s3://{run}/checkpoint_{grown[0]}",
        "world_size": 1,
        "resharded_for": 2,
    }
