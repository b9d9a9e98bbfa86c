"""Building the merged model of a checkpoint: LoRA, QLoRA (into the dequantized or original base) and full."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from cluster.errors import UserError
from cluster.merge.quantized import load_dequantized_into
from cluster.model.load import (
    DTYPES,
    load_adapter,
    load_base,
    load_base_config,
    load_base_generation_config,
    load_folder_config,
    load_folder_model,
    load_quantized_base,
)
from cluster.spec import JobSpec

WEIGHT_GLOBS = ("model.safetensors", "model-*.safetensors")
PICKLE_GLOBS = ("pytorch_model.bin", "pytorch_model-*.bin")


def spec_as_trained(manifest: dict) -> JobSpec:
    """The checkpoint's spec with model.dtype set to the dtype it was really trained in (float32 on CPU runs)."""
    spec = JobSpec.model_validate(manifest["spec"])
    dtype = manifest.get("dtype")
    if dtype in DTYPES and dtype != spec.model.dtype:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"dtype": dtype})})
    return spec


def merged_model(ckpt_dir: Path, spec: JobSpec, into: str = "dequantized"):
    """The checkpoint as one plain transformers model in the spec's dtype, ready for save_pretrained."""
    method = spec.model.method
    if method == "full":
        return _full_model(ckpt_dir, spec)
    if not (ckpt_dir / "adapter_config.json").is_file():
        raise UserError(
            f"{ckpt_dir} is a {method} checkpoint without adapter_config.json. "
            "Fix: point at a complete checkpoint folder (the adapter is saved with PEFT save_pretrained)."
        )
    dtype = DTYPES[spec.model.dtype]
    base = load_base(spec, dtype)
    if method == "qlora" and into == "dequantized":
        quantized = load_quantized_base(spec, dtype)
        load_dequantized_into(base, quantized, dtype)
        del quantized
        gc.collect()
    return merge_adapter(base, ckpt_dir)


def merge_adapter(base, adapter_dir: Path):
    """`base` with the PEFT adapter in `adapter_dir` merged into its weights (adapter layers removed)."""
    return load_adapter(base, adapter_dir).merge_and_unload(safe_merge=True)


def _full_model(ckpt_dir: Path, spec: JobSpec):
    dtype = DTYPES[spec.model.dtype]
    if any(next(ckpt_dir.glob(g), None) for g in WEIGHT_GLOBS):
        return load_folder_model(ckpt_dir, dtype, spec)
    if any(next(ckpt_dir.glob(g), None) for g in PICKLE_GLOBS):
        raise UserError(
            f"{ckpt_dir} holds its weights as pickle (pytorch_model*.bin), which can run code when loaded. "
            "Fix: save the checkpoint as safetensors (save_pretrained's default)."
        )
    if zero_tag(ckpt_dir) is None:
        raise UserError(
            f"{ckpt_dir} is a full fine-tune checkpoint with neither model*.safetensors nor DeepSpeed "
            "global_step*/ shards. Fix: point at a complete checkpoint folder."
        )
    return _from_zero_shards(ckpt_dir, spec)


def zero_tag(ckpt_dir: Path) -> str | None:
    """The DeepSpeed checkpoint tag (global_stepN) in a folder: the `latest` file, else the highest step."""
    latest = ckpt_dir / "latest"
    if latest.is_file() and (ckpt_dir / latest.read_text().strip()).is_dir():
        return latest.read_text().strip()
    steps = sorted(
        (p for p in ckpt_dir.glob("global_step*") if p.is_dir() and any(p.glob("*model_states.pt"))),
        key=lambda p: int("".join(ch for ch in p.name if ch.isdigit()) or 0),
    )
    return steps[-1].name if steps else None


def _from_zero_shards(ckpt_dir: Path, spec: JobSpec):
    """Consolidate ZeRO-2/3 shards (zero_pp_rank_*) into one model, so users never convert them by hand."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=zero_tag(ckpt_dir))
    config = load_folder_config(ckpt_dir, spec) if (ckpt_dir / "config.json").is_file() else load_base_config(spec)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=spec.model.trust_remote_code)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if _is_tied(model, k)}
    if set(missing) - tied or unexpected:
        raise UserError(
            f"the DeepSpeed shards in {ckpt_dir} do not fit {spec.model.base}: missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}. "
            "Fix: merge with the base model the run was trained from (manifest base_model)."
        )
    model.tie_weights()
    generation = load_base_generation_config(spec)
    if generation is not None:  # else keep the one derived from the config
        model.generation_config = generation
    return model.to(DTYPES[spec.model.dtype])


def _is_tied(model, key: str) -> bool:
    """A weight absent from the shards because it shares storage with the input embeddings."""
    out = model.get_output_embeddings()
    return bool(model.config.get_text_config().tie_word_embeddings) and out is not None and key.startswith("lm_head")
