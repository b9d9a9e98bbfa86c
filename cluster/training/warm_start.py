"""Warm starts: a run that starts from an earlier run, checkpoint or export (`model.init_from`), and its lineage."""

from __future__ import annotations

from typing import Any

from cluster import storage
from cluster.errors import UserError
from cluster.manifest import MANIFEST, read_manifest
from cluster.spec import JobSpec


def resolve_init(uri: str) -> tuple[str, dict]:
    """The export or checkpoint `uri` names (a run folder means its best complete checkpoint), and its manifest."""
    from cluster.merge.locate import find_checkpoint

    uri = storage.normalize(uri)
    if storage.exists(storage.join(uri, MANIFEST)) and read_manifest(uri).get("kind") == "export":
        return uri, read_manifest(uri)
    return find_checkpoint(uri)


def lineage(spec: JobSpec) -> dict[str, Any] | None:
    """Where this run started: run name, checkpoint or export URI, its step, and that run's own lineage (parent)."""
    if not spec.model.init_from:
        return None
    uri, manifest = resolve_init(spec.model.init_from)
    return {"init_from": spec.model.init_from, "uri": uri, "kind": manifest.get("kind"),
            "run": manifest.get("spec", {}).get("output", {}).get("name"), "step": manifest.get("step"),
            "method": manifest.get("method"), "parent": manifest.get("lineage")}


def load_start_model(spec: JobSpec, ds_config: dict | None, on_gpu: bool, device_index: int, wrap_adapter: bool):
    """The model a run starts from: the base (load_model), an earlier export/full checkpoint, or base + earlier adapter.

    A continued adapter comes back as a trainable PeftModel whatever `wrap_adapter` says: the trainer must not add a
    second one (and TRL's DPO/KTO then keep a frozen copy of it, adapter-sized, as the reference).
    """
    from cluster.merge.locate import local_copy
    from cluster.model.load import load_adapter, load_model

    if not spec.model.init_from:
        return load_model(spec, ds_config, on_gpu, device_index, wrap_adapter=wrap_adapter)
    uri, manifest = resolve_init(spec.model.init_from)
    folder = str(local_copy(uri))
    if manifest.get("kind") == "export" or manifest.get("method") == "full":
        return load_model(spec, ds_config, on_gpu, device_index, wrap_adapter=wrap_adapter, source=folder)
    if spec.model.method == "full" or manifest.get("base_model") != spec.model.base:
        raise UserError(f"model.init_from {spec.model.init_from}: an adapter checkpoint of {manifest.get('base_model')} "
                        f"({manifest.get('method')}) cannot start a {spec.model.method} run of {spec.model.base}. Fix: use "
                        "the same model.base with method lora/qlora, or start from the run's merged export.")
    return load_adapter(load_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False), folder)
