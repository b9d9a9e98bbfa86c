"""Two Ray nodes with separate disks and checkpoints in S3: every rank's files reach storage, the manifest covers
them, and a run survives its driver being killed, a damaged checkpoint and a lost node."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster.spec import validate_spec
from cluster.training.trainer import loop_config
from tests.cluster.multinode.conftest import BUCKET, REPO, s3fs_client
from tests.cluster.training.conftest import run_single_processes

pytestmark = pytest.mark.slow

STEPS, SAVE = 6, 2
# The elastic run's length: its one worker is held once it has recorded checkpoint STEPS and one past those the two
# workers began, seconds after writing it (Ray Train's controller polls its workers every 2 s, then the test polls S3);
# the steps after keep the run going until then. At most 51 steps: one pass over the 413 rows, beyond which the
# one-process baseline's batches differ.
ELASTIC_STEPS = 20
_BASELINE: dict[int, float] = {}  # per-step losses of one process for ELASTIC_STEPS steps, computed once for the module


def _spec(model_dir: Path, name: str, **cluster) -> dict:
    return {
        "model": {"base": str(model_dir), "method": "full", "dtype": "float32"},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256},
        "train": {
            "max_steps": STEPS,
            "learning_rate": 3e-4,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "micro_batch_size": 4,
            "eval_steps": None,
            "save_steps": SAVE,
            "keep_checkpoints": 2,
        },
        "cluster": {
            "num_workers": 2,
            "gpus_per_worker": 0,
            "cpus_per_worker": 1,
            "sharding": "deepspeed_zero3",
            "placement": "spread",
            "max_failures": 2,
            **cluster,
        },
        "output": {"storage": f"s3://{BUCKET}/runs", "name": name},
    }


class Drivers:
    """`python -m jobs.finetune` processes started by a test, each stopped by its pid when the test ends."""

    def __init__(self, cluster, folder: Path):
        self.cluster, self.folder, self.procs = cluster, folder, []

    def start(self, spec_path: Path) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"driver-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.finetune", str(spec_path), "--address", self.cluster.address],
            cwd=REPO,
            env={**self.cluster.node_env("driver"), "RAY_ADDRESS": self.cluster.address},
            stdout=open(log, "w"),  # noqa: SIM115 - the driver writes to it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc, log

    def run(self, spec_path: Path, timeout: float = 900) -> str:
        return self.finish(*self.start(spec_path), timeout)

    @staticmethod
    def finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
        """Wait for a started driver; its log, once it exited 0."""
        proc.wait(timeout=timeout)
        out = log.read_text()
        assert proc.returncode == 0, out[-5000:]
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


@pytest.fixture
def drivers(two_nodes, tmp_path):
    two_nodes.heal()
    d = Drivers(two_nodes, tmp_path)
    try:
        yield d
    finally:
        d.stop()


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the driver ended early:\n" + log.read_text()[-5000:]
        assert time.time() < deadline, "timed out:\n" + log.read_text()[-5000:]
        time.sleep(0.3)


def _recorded(fs, run: str) -> list[int]:
    """Steps of the complete checkpoints Ray Train has recorded for the run (what a restart resumes from)."""
    fs.invalidate_cache()
    snapshot = f"{run}/checkpoint_manager_snapshot.json"
    if not fs.exists(snapshot):
        return []
    steps = {int(s) for s in re.findall(r"checkpoint_(\d{8})", fs.cat(snapshot).decode())}
    return sorted(s for s in steps if fs.exists(f"{run}/checkpoint_{s:08d}/manifest.json"))


def _baseline(cluster, fs, run: str, spec: dict, tmp: Path, steps: int = STEPS) -> dict[int, float]:
    """The one-process losses of the first `steps` steps. Computed once for the module, for ELASTIC_STEPS steps: a
    constant learning rate and the same data order make its first STEPS steps those of a STEPS-step run."""
    if not _BASELINE:
        data = json.loads(fs.cat(f"{run}/data_report.json"))  # every run here prepares the same data (same hash)
        longest = {**spec, "train": {**spec["train"], "max_steps": ELASTIC_STEPS}}
        _BASELINE.update(_one_process_losses(cluster, longest, f"s3://{run}/data/{data['hash']}/train", tmp))
        assert sorted(_BASELINE) == list(range(1, ELASTIC_STEPS + 1))
    return {step: loss for step, loss in _BASELINE.items() if step <= steps}


def _assert_same_losses(history: list[dict], expected: dict[int, float]) -> None:
    losses = _losses(history)
    assert sorted(losses) == sorted(expected)
    for step, loss in losses.items():
        assert abs(loss - expected[step]) / expected[step] <= 1e-4, (step, loss, expected[step])


def _trained_steps(out: str) -> list[int]:
    return sorted({int(s) for s in re.findall(rf"rayfit: step (\d+)/{STEPS}\b", out)})


def _losses(history: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def _one_process_losses(cluster, spec: dict, train_path: str, tmp: Path) -> dict[int, float]:
    """The same global batch in one process on one node, without Ray: one worker accumulating two micro-batches. It
    writes no checkpoint (nothing reads one): saving changes no loss."""
    steps = spec["train"]["max_steps"]
    single = {
        **spec,
        "cluster": {**spec["cluster"], "num_workers": 1},
        "train": {**spec["train"], "gradient_accumulation_steps": 2, "save_steps": steps + 1},
        "output": {"storage": str(tmp / "single"), "name": "single"},
    }
    run_single_processes([loop_config(validate_spec(single), train_path, None)], tmp, cluster.node_env("single"), 900)
    return _losses(json.loads((tmp / "single" / "single" / "log_history.json").read_text()))


def test_zero3_on_two_nodes_survives_driver_loss_and_a_damaged_checkpoint(
    two_nodes, drivers, s3_endpoint, tiny_model_dir, tmp_path
):
    fs = s3fs_client(s3_endpoint)
    run = f"{BUCKET}/runs/zero3"
    spec = _spec(tiny_model_dir, "zero3")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    # The driver is killed once Ray Train has recorded a complete checkpoint.
    first, log = drivers.start(spec_path)
    _wait_for(lambda: _recorded(fs, run), first, log)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = _recorded(fs, run)[-1]
    assert resumed < STEPS, "the run ended before the driver was killed"

    # Submitted again, the run continues from that checkpoint: earlier steps are not trained again.
    out = drivers.run(spec_path)
    assert f"resuming from s3://{run}/checkpoint_{resumed:08d}" in out, out[-3000:]
    assert _trained_steps(out) == list(range(resumed + 1, STEPS + 1)), out[-3000:]
    fs.invalidate_cache()
    last = f"{run}/checkpoint_{STEPS:08d}"
    manifest = json.loads(fs.cat(f"{last}/manifest.json"))
    # every rank's ZeRO-3 shards are in storage, listed and checksummed, uploaded from two different nodes
    shards = sorted(f.rsplit("/", 1)[-1] for f in manifest["files"] if "zero_pp_rank_" in f)
    assert shards == sorted(f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim"))
    assert len(manifest["nodes"]) == 2 and sorted(r for n in manifest["nodes"].values() for r in n["ranks"]) == [0, 1]
    for node in manifest["nodes"].values():  # each node uploaded its own rank's shards
        assert any(f"zero_pp_rank_{node['ranks'][0]}_" in f for f in node["files"])
    for rel, meta in manifest["files"].items():
        assert fs.size(f"{last}/{rel}") == meta["bytes"], rel
    history = json.loads(fs.cat(f"{run}/log_history.json"))

    # One shard deleted from the newest checkpoint: the next submission says why it skips it and uses the one before.
    shard = next(f for f in manifest["files"] if "zero_pp_rank_1" in f and "optim" in f)
    fs.rm(f"{last}/{shard}")
    out = drivers.run(spec_path)
    skipped = [line for line in out.splitlines() if "skipping checkpoint" in line]
    assert skipped and f"s3://{last}: 1 file(s) differ" in skipped[0] and f"{shard}: missing" in skipped[0], out[-3000:]
    previous = STEPS - SAVE
    assert f"resuming from s3://{run}/checkpoint_{previous:08d}" in out, out[-3000:]
    assert _trained_steps(out) == list(range(previous + 1, STEPS + 1))
    fs.invalidate_cache()
    assert fs.exists(f"{last}/{shard}")
    redone = json.loads(fs.cat(f"{run}/log_history.json"))

    # Per-step losses equal the same global batch in one process on one node (relative 1e-4), across both resumes.
    expected = _baseline(two_nodes, fs, run, spec, tmp_path)
    _assert_same_losses(history, expected)
    _assert_same_losses(redone, expected)


def test_node_lost_mid_run_resumes_on_a_replacement(two_nodes, drivers, s3_endpoint, tiny_model_dir, tmp_path):
    fs = s3fs_client(s3_endpoint)
    run = f"{BUCKET}/runs/node-loss"
    spec = _spec(tiny_model_dir, "node-loss")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    driver, log = drivers.start(spec_path)
    _wait_for(lambda: _recorded(fs, run), driver, log)
    lost = two_nodes.nodes[-1][0]
    two_nodes.lose_node(lost)  # the node holding rank 1 (spread placement: one worker per node)
    two_nodes.add_node()  # a replacement joins
    out = drivers.finish(driver, log)
    resumed = re.findall(rf"resuming from s3://{run}/checkpoint_(\d{{8}})", out)
    assert resumed and int(resumed[0]) < STEPS, out[-3000:]
    fs.invalidate_cache()
    _assert_same_losses(json.loads(fs.cat(f"{run}/log_history.json")), _baseline(two_nodes, fs, run, spec, tmp_path))


def test_zero2_lora_on_two_nodes_with_background_upload(two_nodes, drivers, s3_endpoint, tiny_model_dir, tmp_path):
    fs = s3fs_client(s3_endpoint)
    run = f"{BUCKET}/runs/zero2-lora"
    spec = _spec(tiny_model_dir, "zero2-lora", sharding="deepspeed_zero2", checkpoint_upload="async")
    spec["model"].update(method="lora", lora={"r": 8, "alpha": 16, "dropout": 0.0})
    spec["train"].update(max_steps=4, learning_rate=1e-3)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    out = drivers.run(spec_path)
    assert "(async upload)" in out
    fs.invalidate_cache()
    for step in (2, 4):
        folder = f"{run}/checkpoint_{step:08d}"
        manifest = json.loads(fs.cat(f"{folder}/manifest.json"))
        shards = sorted(f.rsplit("/", 1)[-1] for f in manifest["files"] if "zero_pp_rank_" in f)
        assert shards == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)], shards
        assert "adapter_model.safetensors" in manifest["files"] and manifest["adapter_config"]["r"] == 8
        assert len(manifest["nodes"]) == 2
        for rel, meta in manifest["files"].items():
            assert fs.size(f"{folder}/{rel}") == meta["bytes"], rel

    single = {**spec, "cluster": {**spec["cluster"], "checkpoint_upload": "sync"}}
    data = json.loads(fs.cat(f"{run}/data_report.json"))
    one = _one_process_losses(two_nodes, single, f"s3://{run}/data/{data['hash']}/train", tmp_path)
    _assert_same_losses(json.loads(fs.cat(f"{run}/log_history.json")), one)
