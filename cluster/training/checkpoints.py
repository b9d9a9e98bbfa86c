"""Writing checkpoints: their manifests (written last) and the copy to storage. Their layout is cluster.run_folder's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.manifest import build_manifest, file_table, merge_file_tables, put_manifest, write_manifest
from cluster.spec import JobSpec
from cluster.training.warm_start import lineage

NODE_TABLES = ".rayfit-files"  # per-node file tables of a checkpoint uploaded in the background


def latest_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The most recent value of every logged number (loss, eval_loss, learning_rate, ...), plain floats only."""
    out: dict[str, float] = {}
    for entry in log_history:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    if "loss" in out:
        out["train_loss"] = out["loss"]
    return out


def checkpoint_fields(
    folder: Path,
    spec: JobSpec,
    step: int,
    dtype: str,
    metrics: dict[str, float],
    world: int = 1,
    resumed_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint's manifest says besides its files: spec, base model, objective (and its own fields: GRPO's
    graders), the metric that ranks checkpoints, method, dtype, step, metrics, the number
    of workers that wrote it (a resume on another number reshards ZeRO state), the checkpoint this attempt resumed
    from, and the adapter and quantization settings when there are any."""
    from cluster.objectives import recipe_for

    recipe = recipe_for(spec)
    fields: dict[str, Any] = {
        "spec": spec.model_dump(mode="json", exclude_unset=True),
        "base_model": spec.model.base,
        "objective": recipe.name,
        "rank_by": list(recipe.checkpoint_metric),  # how cluster.run_folder.best ranks this run's checkpoints
        **recipe.manifest_fields(spec),
        "method": spec.model.method,
        "dtype": dtype,
        "step": step,
        "metrics": metrics,
        "world_size": world,
    }
    if resumed_from:
        fields["resumed_from"] = resumed_from
    if parents := lineage(spec):  # warm start: the run and checkpoint this one started from, and their parents
        fields["lineage"] = parents
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        fields["adapter_config"] = json.loads(adapter.read_text())
    if spec.model.method == "qlora":
        fields["quantization"] = spec.model.quantization.model_dump(mode="json")
    return fields


def describe_checkpoint(
    folder: Path,
    dest: str,
    spec: JobSpec,
    step: int,
    dtype: str,
    metrics: dict[str, float],
    files: dict[str, dict[str, Any]] | None = None,
    nodes: dict[str, Any] | None = None,
    world: int = 1,
    resumed_from: dict[str, Any] | None = None,
) -> dict:
    """Write the manifest of the checkpoint whose rank-0 copy is `folder` and copy it to `dest` in storage, last of all.

    `files` is every rank's file table (default: `folder`'s own files) and `nodes` which node uploaded which files.
    """
    fields = checkpoint_fields(folder, spec, step, dtype, metrics, world, resumed_from)
    manifest = write_manifest(folder, "checkpoint", files=files, **fields, **({"nodes": nodes} if nodes else {}))
    if storage.is_remote(dest) or storage.local_path(dest) != folder.resolve():
        put_manifest(dest, manifest)
    return manifest


def staged_copy(folder: Path, staging: Path) -> Path:
    """A hard-linked copy of `folder` (instant, no extra space; copied across file systems) that an upload in the
    background can read while the Trainer goes on and rotates its own local checkpoints away, or that a resume can
    add files to while the stored checkpoint keeps exactly the files its manifest lists."""
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, copy_function=_link_or_copy)
    return staging


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def upload_with_file_table(dest: str, node: str, rank: int):
    """A Ray Train `checkpoint_upload_fn` run in Ray's upload thread: checksum this node's files, upload them with
    Ray's own storage layer (so Ray manages the checkpoint), then leave the node's file table beside them for the
    manifest, which rank 0 writes once every node's report has reached Ray (`write_manifest_after_uploads`)."""

    def upload(checkpoint, dir_name: str):
        import ray.train

        table = file_table(Path(checkpoint.path))
        persisted = ray.train.get_context().get_storage().persist_current_checkpoint(checkpoint, dir_name)
        storage.write_text(storage.join(dest, NODE_TABLES, f"{node}.json"), json.dumps({"ranks": [rank], "files": table}))
        return persisted

    return upload


def write_manifest_after_uploads(dest: str, fields: dict[str, Any]) -> dict:
    """Wait until Ray Train has recorded the latest report of every rank (each sent after its node's upload
    finished), then merge the nodes' file tables into the manifest and write it, last of all."""
    import ray.train

    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    tables = {
        name.removesuffix(".json"): json.loads(storage.read_text(storage.join(dest, NODE_TABLES, name)))
        for name in storage.list_files(storage.join(dest, NODE_TABLES))
    }
    nodes = {node: {"ranks": t["ranks"], "files": sorted(t["files"])} for node, t in tables.items()}
    manifest = build_manifest("checkpoint", merge_file_tables([t["files"] for t in tables.values()]), **fields, nodes=nodes)
    put_manifest(dest, manifest)
    return manifest


def copy_checkpoint(folder: Path, dest: str) -> None:
    """Copy a local checkpoint to storage without Ray (the single-process path); the manifest follows separately."""
    if not storage.is_remote(dest):
        shutil.rmtree(storage.local_path(dest), ignore_errors=True)  # an incomplete copy from a crash
    storage.upload_dir(folder, dest)
