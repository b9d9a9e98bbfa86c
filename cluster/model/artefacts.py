"""What a model URI holds, for the engines that run it (Serve and batch generation): full weights or a LoRA adapter.

One home for this check, so a model served by the Serve app and one run by `rayfit generate` resolve the same way:
an export or full checkpoint is used only when its files match its manifest, an adapter only when it is LoRA.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster import run_folder, storage
from cluster.errors import UserError
from cluster.manifest import MANIFEST, check_artefact, read_manifest, refuse_pickle_weights
from cluster.model.source import resolve_base

ADAPTER_CONFIG = "adapter_config.json"
# vLLM preallocates LoRA buffers for one of these ranks (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def resolve_model(uri: str) -> str:
    """A local folder (or hub id) holding full weights: an export, a full checkpoint, a plain HF folder or a hub id.
    A rayfit export or checkpoint is used only when its files match its manifest (cluster.manifest.check_artefact)."""
    if not uri.startswith("embedded:") and has_file(uri, MANIFEST):
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


def adapter_dir(uri: str) -> Path:
    """A local folder with the PEFT files of the adapter at `uri` (downloaded once when remote); checks what it is."""
    if has_file(uri, MANIFEST):
        manifest = read_manifest(uri)
        if manifest.get("kind") != "checkpoint" or manifest.get("method") not in ("lora", "qlora"):
            raise UserError(
                f"adapter {uri!r} is not a LoRA checkpoint (manifest kind={manifest.get('kind')}, method="
                f"{manifest.get('method')}). Fix: serve a full model or export as `model`, and only LoRA "
                "checkpoints as adapters."
            )
    elif not has_file(uri, ADAPTER_CONFIG):
        raise UserError(
            f"adapter {uri!r} has neither {MANIFEST} nor {ADAPTER_CONFIG}. Fix: point at a rayfit LoRA checkpoint "
            "folder or a PEFT save_pretrained folder."
        )
    path = Path(resolve_base(uri)) if storage.is_remote(uri) else storage.local_path(uri)
    # Trusted only as far as it checks out: a changed byte or an added pickle is refused, naming the file.
    if has_file(uri, MANIFEST):
        check_artefact(path, f"adapter {uri}", read_manifest(uri))
    else:
        refuse_pickle_weights(path, f"adapter {uri}")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise UserError(f"adapter {uri!r} is {config.get('peft_type')}, not LoRA. Fix: serve LoRA adapters only.")
    return path


def base_and_adapter(uri: str) -> tuple[str, Path | None]:
    """What runs for MODEL `uri`: (full-weights folder or hub id, LoRA adapter folder or None).

    A LoRA checkpoint runs on its manifest's base with itself as the adapter; a run folder runs its export when it has
    one, else its best checkpoint; a PEFT folder (adapter_config.json) runs on the base it names.
    """
    if uri.startswith("embedded:"):
        return resolve_model(uri), None
    if has_file(uri, MANIFEST):
        manifest = read_manifest(uri)
        if manifest.get("kind") == "checkpoint" and manifest.get("method") in ("lora", "qlora"):
            return resolve_model(manifest["base_model"]), adapter_dir(uri)
        return resolve_model(uri), None
    if has_file(uri, ADAPTER_CONFIG):
        base = json.loads(storage.read_text(storage.join(uri, ADAPTER_CONFIG))).get("base_model_name_or_path")
        return resolve_model(base), adapter_dir(uri)
    if has_file(run_folder.part(uri, "export"), MANIFEST):
        return base_and_adapter(run_folder.part(uri, "export"))
    chosen = run_folder.best(run_folder.checkpoints(uri)) if has_file(uri, "") else None
    if chosen is not None:
        return base_and_adapter(chosen.uri)
    return resolve_model(uri), None  # a plain HF folder or hub id; else a UserError naming the missing model


def adapter_rank(path: Path) -> int:
    """The LoRA rank `r` of a local adapter folder."""
    return int(json.loads((path / ADAPTER_CONFIG).read_text()).get("r", 8))


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM supports that holds `rank`; a UserError above vLLM's largest."""
    fitted = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
    if fitted is None:
        raise UserError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}). Fix: use a merged export.")
    return fitted


def has_file(uri: str, name: str) -> bool:
    """Whether `uri` (a folder, local or remote) holds file `name`; False for anything unreachable."""
    try:
        return storage.exists(storage.join(uri, name))
    except (FileNotFoundError, ValueError):
        return False
