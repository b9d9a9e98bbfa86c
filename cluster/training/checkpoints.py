"""Checkpoints in the run folder: names, manifests written last, and finding the newest complete one to resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.manifest import MANIFEST, write_manifest
from cluster.spec import JobSpec
from cluster.training.warm_start import lineage

PREFIX = "checkpoint_"


def run_uri(spec: JobSpec) -> str:
    """The run folder `{output.storage}/{output.name}`, absolute when local."""
    return storage.join(storage.normalize(spec.output.storage), spec.output.name)


def checkpoint_dir_name(step: int) -> str:
    """The folder name of the checkpoint taken after optimizer step `step`; names sort in step order.

    Every rank derives the same name without talking to the others, and a save repeated after a restart
    replaces an incomplete folder of the same step instead of leaving it beside the complete one.
    """
    return f"{PREFIX}{step:08d}"


def is_complete(uri: str) -> bool:
    """A checkpoint is complete once its manifest exists: the manifest is written after every file."""
    return storage.exists(storage.join(uri, MANIFEST))


def newest_complete(run: str) -> str | None:
    """URI of the complete checkpoint with the highest step in the run folder, or None; incomplete ones are skipped."""
    names = [n for n in storage.list_dirs(run) if re.fullmatch(rf"{PREFIX}\d+", n)]
    for name in sorted(names, reverse=True):
        uri = storage.join(run, name)
        if is_complete(uri):
            return uri
    return None


def latest_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The most recent value of every logged number (loss, eval_loss, learning_rate, ...), plain floats only."""
    out: dict[str, float] = {}
    for entry in log_history:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    if "loss" in out:
        out["train_loss"] = out["loss"]
    return out


def describe_checkpoint(folder: Path, dest: str, spec: JobSpec, step: int, dtype: str, metrics: dict[str, float]) -> dict:
    """Write the manifest of the local checkpoint `folder` and copy it to its storage copy `dest`, last of all."""
    fields: dict[str, Any] = {
        "spec": spec.model_dump(mode="json", exclude_unset=True), "base_model": spec.model.base, "method": spec.model.method,
        "dtype": dtype, "step": step, "metrics": metrics,
    }
    if parents := lineage(spec):  # warm start: the run and checkpoint this one started from, and their parents
        fields["lineage"] = parents
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        fields["adapter_config"] = json.loads(adapter.read_text())
    if spec.model.method == "qlora":
        fields["quantization"] = spec.model.quantization.model_dump(mode="json")
    manifest = write_manifest(folder, "checkpoint", **fields)
    if storage.is_remote(dest) or storage.local_path(dest) != folder.resolve():
        storage.write_text(storage.join(dest, MANIFEST), (folder / MANIFEST).read_text())
    return manifest


def copy_checkpoint(folder: Path, dest: str) -> None:
    """Copy a local checkpoint to storage without Ray (the single-process path); the manifest follows separately."""
    if not storage.is_remote(dest):
        shutil.rmtree(storage.local_path(dest), ignore_errors=True)  # an incomplete copy from a crash
    storage.upload_dir(folder, dest)


def local_copy(uri: str, scratch: Path) -> Path:
    """A local folder holding the checkpoint at `uri` (downloaded once into `scratch` when remote)."""
    if not storage.is_remote(uri):
        return storage.local_path(uri)
    return storage.download_dir(uri, scratch / "resume" / Path(uri.rstrip("/")).name)
