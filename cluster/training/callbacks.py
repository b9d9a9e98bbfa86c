"""Trainer callbacks: checkpoints reported to Ray with a manifest written last, progress lines, fault injection."""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback

from cluster import storage
from cluster.manifest import file_table, merge_file_tables
from cluster.run_folder import checkpoint_dir_name
from cluster.spec import JobSpec
from cluster.training.checkpoints import (
    checkpoint_fields,
    copy_checkpoint,
    describe_checkpoint,
    latest_metrics,
    staged_copy,
    upload_with_file_table,
    write_manifest_after_uploads,
)
from cluster.training.collectives import barrier, gather_objects
from cluster.training.loss_plot import plot_losses

FAIL_AT_STEP_ENV = "RAYFIT_FAIL_AT_STEP"


class CheckpointReporter(TrainerCallback):
    """After each save: every node uploads its ranks' files (through Ray Train), then rank 0 writes the manifest.

    Ranks on a node share the folder the Trainer wrote, so one rank per node uploads it; under ZeRO each node holds
    only its own ranks' optimizer (and ZeRO-3 parameter) shards, which is why every node must upload. Every rank
    reports (Ray requires the same number of reports everywhere). The uploading ranks checksum what they upload and
    the manifest, written last, covers every rank's files, so a checkpoint with a manifest is always whole.

    `cluster.checkpoint_upload: sync` uploads while training waits, then rank 0 gathers the file tables and writes
    the manifest. `async` hands a hard-linked copy to Ray Train's background upload and training goes on; rank 0
    writes the manifest in a thread once Ray has every rank's report, which each rank sends after its upload.
    """

    def __init__(
        self,
        spec: JobSpec,
        run: str,
        dtype: str,
        under_ray: bool,
        rank: int,
        node_leader: bool,
        resumed_from: dict[str, Any] | None = None,
    ):
        self.spec, self.run, self.dtype, self.under_ray = spec, run, dtype, under_ray
        self.resumed_from = resumed_from  # {"checkpoint", "world_size"[, "resharded_for"]}: recorded in manifests
        self.rank = rank
        # Without Ray there is one folder (one process, or torchrun on one machine): rank 0 copies it.
        self.uploads = node_leader if under_ray else rank == 0
        self.background = under_ray and spec.cluster.checkpoint_upload == "async"
        self.manifests = ThreadPoolExecutor(max_workers=1) if self.background and rank == 0 else None
        self.pending: list[Future] = []

    def on_save(self, args, state, control, **kwargs):
        start = time.perf_counter()
        step = state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        name = checkpoint_dir_name(step)
        dest = storage.join(self.run, name)
        metrics = {**latest_metrics(state.log_history), "step": float(step)}
        barrier()  # every rank has written its part of its node's folder
        if self.background:
            self._report_in_background(folder, Path(args.output_dir) / "uploading" / name, name, dest, step, metrics)
        else:
            self._report_and_describe(folder, name, dest, step, metrics)
        if self.rank == 0:
            print(
                f"rayfit: checkpoint step {step} -> {dest}: training paused {time.perf_counter() - start:.2f} s "
                f"({self.spec.cluster.checkpoint_upload} upload)",
                flush=True,
            )

    def _report_and_describe(self, folder: Path, name: str, dest: str, step: int, metrics: dict[str, float]) -> None:
        table = file_table(folder) if self.uploads else {}
        if self.under_ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(str(folder)) if self.uploads else None
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        elif self.uploads:
            copy_checkpoint(folder, dest)
        tables = gather_objects((self.rank, _node_id(self.under_ray), table))
        if self.rank == 0:
            nodes: dict[str, Any] = {}
            for rank, node, files in tables:
                entry = nodes.setdefault(node, {"ranks": [], "files": []})
                entry["ranks"].append(rank)
                entry["files"] += sorted(files)
            describe_checkpoint(
                folder,
                dest,
                self.spec,
                step,
                self.dtype,
                metrics,
                files=merge_file_tables([t for _, _, t in tables]),
                nodes=nodes,
                world=len(tables),
                resumed_from=self.resumed_from,
            )
        barrier()  # nobody resumes or reads the folder before its manifest exists

    def _report_in_background(
        self, folder: Path, staging: Path, name: str, dest: str, step: int, metrics: dict[str, float]
    ) -> None:
        import ray.train

        ckpt, upload = None, None
        if self.uploads:
            ckpt = ray.train.Checkpoint.from_directory(str(staged_copy(folder, staging)))
            upload = upload_with_file_table(dest, _node_id(True), self.rank)
        ray.train.report(
            metrics,
            checkpoint=ckpt,
            checkpoint_dir_name=name,
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
            delete_local_checkpoint_after_upload=True,
            checkpoint_upload_fn=upload,
        )
        if self.manifests is not None:
            fields = checkpoint_fields(folder, self.spec, step, self.dtype, metrics, _world(), self.resumed_from)
            self.pending.append(self.manifests.submit(write_manifest_after_uploads, dest, fields))

    def on_train_end(self, args, state, control, **kwargs):
        for done in self.pending:  # the run ends only when every checkpoint has its manifest
            done.result()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def node_leader(under_ray: bool, rank: int) -> bool:
    """Whether this rank is the lowest rank on its node, the one that uploads and cleans the node's folders.

    Decided from Ray node ids rather than Ray Train's local rank, which groups workers by IP address: nodes that
    share an address (several Ray nodes on one machine) would otherwise look like one node with one folder.
    """
    node = _node_id(under_ray)
    return rank == min(r for r, n in enumerate(gather_objects(node)) if n == node)


def _node_id(under_ray: bool) -> str:
    """The Ray node this process runs on (its host name without Ray)."""
    if under_ray:
        import ray

        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


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
