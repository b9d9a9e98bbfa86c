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

pytestmark = pytest.mark.slow

STEPS, SAVE = 4, 2


def _spec(model_dir: Path, name: str, **cluster) -> dict:
    return {
        "model": {"base": str(model_dir), "method": "full", "dtype": "float32"},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256},
        "train": {"max_steps": STEPS, "learning_rate": 3e-4, "lr_scheduler": "constant", "warmup_steps": 0,
                  "gradient_checkpointing": False, "logging_steps": 1, "eval_steps": None, "save_steps": SAVE,
                  "keep_checkpoints": 2},
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1, "deepspeed": "zero3",
                    "placement": "spread", "max_failures": 2, **cluster},
        "output": {"storage": f"s3://{BUCKET}/runs", "name": name},
    }


class Drivers:
    """`python -m jobs.finetune` processes started by a test, each stopped by its pid when the test ends."""

    def __init__(self, cluster, folder: Path):
        self.cluster, self.folder, self.procs = cluster, folder, []

    def start(self, spec_path: Path) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"driver-{len(self.procs)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "jobs.finetune", str(spec_path), "--address", self.cluster.address],
                                cwd=REPO, env=self.cluster.node_env("driver"), stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def run(self, spec_path: Path, timeout: float = 900) -> str:
        proc, log = self.start(spec_path)
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
        time.sleep(1)


def _trained_steps(out: str) -> list[int]:
    return sorted({int(s) for s in re.findall(rf"\[rayfit\] step (\d+)/{STEPS}\b", out)})


def _losses(history: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def _one_process_losses(cluster, spec: dict, train_path: str, tmp: Path) -> dict[int, float]:
    """The same global batch in one process on one node, without Ray: one worker accumulating two micro-batches."""
    single = {**spec, "cluster": {**spec["cluster"], "num_workers": 1},
              "train": {**spec["train"], "gradient_accumulation_steps": 2},
              "output": {"storage": str(tmp / "single"), "name": "single"}}
    cfg = tmp / "loop-config.json"
    cfg.write_text(json.dumps(loop_config(validate_spec(single), train_path, None)))
    code = "import json,sys; from cluster.training.loop import train_loop; train_loop(json.load(open(sys.argv[1])))"
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], cwd=REPO, env=cluster.node_env("single"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _losses(json.loads((tmp / "single" / "single" / "log_history.json").read_text()))


def test_zero3_on_two_nodes_survives_driver_loss_and_a_damaged_checkpoint(two_nodes, drivers, s3_endpoint,
                                                                         tiny_model_dir, tmp_path):
    fs = s3fs_client(s3_endpoint)
    run = f"{BUCKET}/runs/zero3"
    spec = _spec(tiny_model_dir, "zero3")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    # The driver is killed once the step-2 checkpoint is complete and Ray Train has recorded it.
    first, log = drivers.start(spec_path)
    snapshot = f"{run}/checkpoint_manager_snapshot.json"
    _wait_for(lambda: fs.exists(f"{run}/checkpoint_00000002/manifest.json") and fs.exists(snapshot)
              and "checkpoint_00000002" in fs.cat(snapshot).decode(), first, log)
    first.send_signal(signal.SIGKILL)
    first.wait()
    fs.invalidate_cache()

    # Submitted again, the run continues from step 2: steps 1 and 2 are not trained again.
    out = drivers.run(spec_path)
    assert f"resuming from s3://{run}/checkpoint_00000002" in out
    assert _trained_steps(out) == [3, 4], out[-3000:]
    fs.invalidate_cache()
    manifest = json.loads(fs.cat(f"{run}/checkpoint_00000004/manifest.json"))
    # every rank's ZeRO-3 shards are in storage, listed and checksummed, uploaded from two different nodes
    shards = sorted(f.rsplit("/", 1)[-1] for f in manifest["files"] if "zero_pp_rank_" in f)
    assert shards == [f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")] \
        or shards == sorted(f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim"))
    assert len(manifest["nodes"]) == 2 and sorted(r for n in manifest["nodes"].values() for r in n["ranks"]) == [0, 1]
    for rel, meta in manifest["files"].items():
        assert fs.size(f"{run}/checkpoint_00000004/{rel}") == meta["bytes"], rel
    history = json.loads(fs.cat(f"{run}/log_history.json"))

    # One shard deleted from the newest checkpoint: the next submission says why it skips it and uses step 2.
    shard = next(f for f in manifest["files"] if "zero_pp_rank_1" in f and "optim" in f)
    fs.rm(f"{run}/checkpoint_00000004/{shard}")
    out = drivers.run(spec_path)
    skipped = [line for line in out.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and f"s3://{run}/checkpoint_00000004: 1 file(s) differ" in skipped[0] \
        and f"{shard}: missing" in skipped[0], out[-3000:]
    assert f"resuming from s3://{run}/checkpoint_00000002" in out and _trained_steps(out) == [3, 4]
    fs.invalidate_cache()
    assert fs.exists(f"{run}/checkpoint_00000004/{shard}")
    redone = json.loads(fs.cat(f"{run}/log_history.json"))

    # Per-step losses equal the same global batch in one process on one node (relative 1e-4), before and after
    # each resume.
    data = json.loads(fs.cat(f"{run}/data_report.json"))
    one = _one_process_losses(two_nodes, spec, f"s3://{run}/data/{data['hash']}/train", tmp_path)
    assert sorted(one) == list(range(1, STEPS + 1))
    for losses in (_losses(history), _losses(redone)):
        assert sorted(losses) == sorted(one)
        for step, loss in losses.items():
            assert abs(loss - one[step]) / one[step] <= 1e-4, (step, loss, one[step])
