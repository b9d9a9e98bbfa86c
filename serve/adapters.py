"""Finding what to serve: the base (or export) folder, and each adapter's folder by name, local or in object storage."""

from __future__ import annotations

import json
from pathlib import Path

from cluster import run_folder, storage
from cluster.errors import UserError
from cluster.manifest import MANIFEST, check_artefact, read_manifest, refuse_pickle_weights
from cluster.model.source import resolve_base
from serve.args import NAME, ServeArgs

ADAPTER_CONFIG = "adapter_config.json"


def resolve_model(uri: str) -> str:
    """A local folder (or hub id) holding full weights: an export, a full checkpoint, a plain HF folder or a hub id.
    A rayfit export or checkpoint is served only when its files match its manifest (cluster.manifest.check_artefact)."""
    if not uri.startswith("embedded:") and _has(uri, MANIFEST):
        manifest = read_manifest(uri)
        if manifest.get("kind") == "checkpoint" and manifest.get("method") in ("lora", "qlora"):
            raise UserError(
                f"model {uri!r} is a {manifest['method']} adapter checkpoint, not a full model. Fix: set model to "
                f"its base ({manifest.get('base_model')!r}) and list this URI under adapters."
            )
        folder = resolve_base(uri)
        check_artefact(Path(folder), f"model {uri}", manifest)
        return folder
    return resolve_base(uri)


def adapter_uri(args: ServeArgs, name: str) -> str | None:
    """Where adapter `name` lives: listed in args, published by the fine-tuning service (`ft:` names, looked up in
    `storage` on first use), or a sub-folder of adapter_root; None when unknown."""
    if name in args.adapters:
        return args.adapters[name]
    if args.storage and name.startswith("ft:"):
        from cluster.service.published import adapter_uri as published_uri
        from cluster.service.store import Store

        return published_uri(Store(args.storage), name)
    if args.adapter_root is None or not NAME.match(name):
        return None
    candidate = storage.join(args.adapter_root, name)
    if _has(candidate, MANIFEST) or _has(candidate, ADAPTER_CONFIG):
        return candidate
    chosen = run_folder.best(run_folder.checkpoints(candidate))  # a run folder: serve its best checkpoint
    return chosen.uri if chosen else None


def root_names(args: ServeArgs) -> list[str]:
    """Adapter names found under adapter_root now (for /v1/models)."""
    if args.adapter_root is None:
        return []
    return [d for d in storage.list_dirs(args.adapter_root) if NAME.match(d) and d not in args.adapters]


def adapter_dir(uri: str) -> Path:
    """A local folder with the PEFT files of the adapter at `uri` (downloaded once when remote); checks what it is."""
    if _has(uri, MANIFEST):
        manifest = read_manifest(uri)
        if manifest.get("kind") != "checkpoint" or manifest.get("method") not in ("lora", "qlora"):
            raise UserError(
                f"adapter {uri!r} is not a LoRA checkpoint (manifest kind={manifest.get('kind')}, method="
                f"{manifest.get('method')}). Fix: serve a full model or export as `model`, and only LoRA "
                "checkpoints as adapters."
            )
    elif not _has(uri, ADAPTER_CONFIG):
        raise UserError(
            f"adapter {uri!r} has neither {MANIFEST} nor {ADAPTER_CONFIG}. Fix: point at a rayfit LoRA checkpoint "
            "folder or a PEFT save_pretrained folder."
        )
    path = Path(resolve_base(uri)) if storage.is_remote(uri) else storage.local_path(uri)
    # Trusted only as far as it checks out: a changed byte or an added pickle is refused, naming the file.
    if _has(uri, MANIFEST):
        check_artefact(path, f"adapter {uri}", read_manifest(uri))
    else:
        refuse_pickle_weights(path, f"adapter {uri}")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise UserError(f"adapter {uri!r} is {config.get('peft_type')}, not LoRA. Fix: serve LoRA adapters only.")
    return path


def _has(uri: str, name: str) -> bool:
    try:
        return storage.exists(storage.join(uri, name))
    except (FileNotFoundError, ValueError):
        return False
