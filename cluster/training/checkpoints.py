"""Writing checkpoints: their manifests (written last) and the copy to storage. Their layout is cluster.run_folder's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.manifest import MANIFEST, write_manifest
from cluster.spec import JobSpec


def latest_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The most recent value of every logged number (loss, eval_loss, learning_rate, ...), plain floats only."""
    out: dict[str, float] = {}
    for entry in log_history:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    if "loss" in out:
        out["train_loss"] = out["loss"]
    return out


def describe_checkpoint(folder: Path, dest: str, spec: JobSpec, step: int, dtype: str, metrics: dict[str, float],
                        files: dict[str, dict[str, Any]] | None = None, nodes: dict[str, Any] | None = None) -> dict:
    """Write the manifest of the checkpoint whose rank-0 copy is `folder` and copy it to `dest` in storage, last of all.

    `files` is every rank's file table (default: `folder`'s own files) and `nodes` which node uploaded which files.
    """
    fields: dict[str, Any] = {
        "spec": spec.model_dump(mode="json", exclude_unset=True), "base_model": spec.model.base, "method": spec.model.method,
        "dtype": dtype, "step": step, "metrics": metrics, **({"nodes": nodes} if nodes else {}),
    }
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        fields["adapter_config"] = json.loads(adapter.read_text())
    if spec.model.method == "qlora":
        fields["quantization"] = spec.model.quantization.model_dump(mode="json")
    manifest = write_manifest(folder, "checkpoint", files=files, **fields)
    if storage.is_remote(dest) or storage.local_path(dest) != folder.resolve():
        storage.write_text(storage.join(dest, MANIFEST), (folder / MANIFEST).read_text())
    return manifest


def copy_checkpoint(folder: Path, dest: str) -> None:
    """Copy a local checkpoint to storage without Ray (the single-process path); the manifest follows separately."""
    if not storage.is_remote(dest):
        shutil.rmtree(storage.local_path(dest), ignore_errors=True)  # an incomplete copy from a crash
    storage.upload_dir(folder, dest)
