"""Trainer callbacks: checkpoints reported to Ray with a manifest written last, progress lines, fault injection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from cluster import storage
from cluster.run_folder import checkpoint_dir_name
from cluster.spec import JobSpec
from cluster.training.checkpoints import copy_checkpoint, describe_checkpoint, latest_metrics
from cluster.training.loss_plot import plot_losses

FAIL_AT_STEP_ENV = "RAYFIT_FAIL_AT_STEP"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointReporter(TrainerCallback):
    """After each save: hand the checkpoint to Ray Train (which keeps the best k), then write its manifest.

    Every rank reports (Ray requires the same number of reports everywhere); one rank per node uploads, since
    ranks on a node share the folder the Trainer wrote. The barrier after the report means every upload is done
    before rank 0 writes the manifest, so a checkpoint with a manifest is always whole.
    """

    def __init__(self, spec: JobSpec, run: str, dtype: str, under_ray: bool, rank: int, local_rank: int):
        self.spec, self.run, self.dtype, self.under_ray = spec, run, dtype, under_ray
        self.rank, self.local_rank = rank, local_rank

    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        name = checkpoint_dir_name(step)
        dest = storage.join(self.run, name)
        metrics = {**latest_metrics(state.log_history), "step": float(step)}
        if self.under_ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(str(folder)) if self.local_rank == 0 else None
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        else:
            _barrier()  # every rank has written its part of the folder
            if self.rank == 0:
                copy_checkpoint(folder, dest)
        _barrier()
        if self.rank == 0:
            describe_checkpoint(folder, dest, self.spec, step, self.dtype, metrics)
            print(f"[rayfit] checkpoint step {step} -> {dest}", flush=True)
        _barrier()  # nobody resumes or reads the folder before its manifest exists


class RunArtifacts(TrainerCallback):
    """At the end, rank 0 writes the log history and the loss curve into the run folder."""

    def __init__(self, run: str, rank: int, title: str):
        self.run, self.rank, self.title = run, rank, title

    def on_train_end(self, args, state, control, **kwargs):
        if self.rank != 0:
            return
        storage.write_text(storage.join(self.run, "log_history.json"), json.dumps(state.log_history, indent=1))
        local = plot_losses(state.log_history, Path(args.output_dir) / "loss.png", self.title)
        _put(local, storage.join(self.run, "loss.png"))


def _put(local: Path, uri: str) -> None:
    """Copy one local file to a URI or path."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)  # a no-op on object stores, needed for local folders
    fs.put_file(str(local), path)


class FaultInjection(TrainerCallback):
    """Test hook, off unless RAYFIT_FAIL_AT_STEP=k: rank 0 dies once at step k.

    A marker file in the run folder records that the fault happened, so the restarted workers run through.
    """

    def __init__(self, run: str, rank: int):
        raw = os.environ.get(FAIL_AT_STEP_ENV)
        self.step = int(raw) if raw else None
        self.marker = storage.join(run, f".fault-injected-at-step-{self.step}")
        self.rank = rank

    def on_step_end(self, args, state, control, **kwargs):
        if self.step is None or self.rank != 0 or state.global_step != self.step or storage.exists(self.marker):
            return
        storage.write_text(self.marker, f"failed once at step {self.step}\n")
        raise RuntimeError(f"{FAIL_AT_STEP_ENV}={self.step}: injected worker failure at step {self.step}")
