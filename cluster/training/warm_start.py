"""Warm starts: a run that starts from an earlier run, checkpoint or export (`model.init_from`), and its lineage."""

from __future__ import annotations

from typing import Any

from cluster import storage
from cluster.errors import UserError
from cluster.manifest import MANIFEST, read_manifest
from cluster.spec import JobSpec


def resolve_init(uri: str) -> tuple[str, dict]:
    """The export or checkpoint `uri` names (a run folder means its best complete checkpoint), and its manifest."""
    from cluster.run_folder import find_checkpoint

    uri = storage.normalize(uri)
    if storage.exists(storage.join(uri, MANIFEST)) and read_manifest(uri).get("kind") == "export":
        return uri, read_manifest(uri)
    return find_checkpoint(uri)


def lineage(spec: JobSpec) -> dict[str, Any] | None:
    """Where this run started: the checkpoint of `model.init_from`, or a rayfit export used as `model.base`, with
    that run's name, step and its own lineage (`parent`); None when the run starts from a plain base model."""
    if spec.model.init_from:
        uri, manifest = resolve_init(spec.model.init_from)
    elif _is_export(spec.model.base):
        uri, manifest = storage.normalize(spec.model.base), read_manifest(storage.normalize(spec.model.base))
    else:
        return None
    return {
        "uri": uri,
        "kind": manifest.get("kind"),
        "run": manifest.get("spec", {}).get("output", {}).get("name"),
        "checkpoint": manifest.get("source_checkpoint", uri),
        "step": manifest.get("step"),
        "method": manifest.get("method"),
        "parent": manifest.get("lineage"),
    }


def _is_export(base: str) -> bool:
    if base.startswith("embedded:") or not (storage.is_remote(base) or base.startswith(("/", "~", ".", "file://"))):
        return False  # a hub id or an embedded model
    uri = storage.normalize(base)
    return storage.exists(storage.join(uri, MANIFEST)) and read_manifest(uri).get("kind") == "export"


def load_start_model(spec: JobSpec, ds_config: dict | None, on_gpu: bool, device_index: int, wrap_adapter: bool):
    """The model a run starts from: the base (load_model), a full checkpoint, or the base with an earlier adapter.

    A continued adapter comes back as a trainable PeftModel whatever `wrap_adapter` says: the trainer must not add a
    second one (and TRL's DPO/KTO then keep a frozen copy of it, adapter-sized, as the reference).
    """
    from cluster.model.load import load_adapter, load_model
    from cluster.run_folder import local_copy

    if not spec.model.init_from:
        return load_model(spec, ds_config, on_gpu, device_index, wrap_adapter=wrap_adapter)
    uri, manifest = resolve_init(spec.model.init_from)
    kind, method = manifest.get("kind"), manifest.get("method")
    if kind == "export":
        raise UserError(
            f"model.init_from {spec.model.init_from} is a merged export. Fix: use it as model.base "
            "(an export is a complete model folder), and remove model.init_from."
        )
    if (method == "full") != (spec.model.method == "full") or manifest.get("base_model") != spec.model.base:
        raise UserError(
            f"model.init_from {spec.model.init_from}: a {method} checkpoint of {manifest.get('base_model')} "
            f"cannot start a {spec.model.method} run of {spec.model.base}. Fix: continue with the same "
            "model.base and method, or merge the run (`rayfit merge RUN`) and use the export as model.base."
        )
    folder = str(local_copy(uri))
    if method == "full":
        return load_model(spec, ds_config, on_gpu, device_index, source=folder)
    return load_adapter(load_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False), folder, trainable=True)
