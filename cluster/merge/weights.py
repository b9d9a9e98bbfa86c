"""Building the merged model of a checkpoint: LoRA, QLoRA (into the dequantized or original base) and full."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from cluster.errors import UserError
from cluster.merge.quantized import DTYPES, load_dequantized_into, load_quantized_base
from cluster.model.source import resolve_base
from cluster.spec import JobSpec

WEIGHT_GLOBS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


def spec_as_trained(manifest: dict) -> JobSpec:
    """The checkpoint's spec with model.dtype set to the dtype it was really trained in (float32 on CPU runs)."""
    spec = JobSpec.model_validate(manifest["spec"])
    dtype = manifest.get("dtype")
    if dtype in DTYPES and dtype != "uint8" and dtype != spec.model.dtype:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"dtype": dtype})})
    return spec


def merged_model(ckpt_dir: Path, spec: JobSpec, into: str = "dequantized"):
    """The checkpoint as one plain transformers model in the spec's dtype, ready for save_pretrained."""
    method = spec.model.method
    if method == "full":
        return _full_model(ckpt_dir, spec)
    if not (ckpt_dir / "adapter_config.json").is_file():
        raise UserError(f"{ckpt_dir} is a {method} checkpoint without adapter_config.json. "
                        "Fix: point at a complete checkpoint folder (the adapter is saved with PEFT save_pretrained).")
    base = _load_base(spec)
    if method == "qlora" and into == "dequantized":
        quantized = load_quantized_base(resolve_base(spec.model.base), spec)
        load_dequantized_into(base, quantized, DTYPES[spec.model.dtype])
        del quantized
        gc.collect()
    return merge_adapter(base, ckpt_dir)


def merge_adapter(base, adapter_dir: Path):
    """`base` with the PEFT adapter in `adapter_dir` merged into its weights (adapter layers removed)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    return peft_model.merge_and_unload(safe_merge=True)


def _load_base(spec: JobSpec):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_base(spec.model.base), dtype=DTYPES[spec.model.dtype], revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code, attn_implementation=spec.model.attn_implementation,
    )


def _full_model(ckpt_dir: Path, spec: JobSpec):
    from transformers import AutoModelForCausalLM

    dtype = DTYPES[spec.model.dtype]
    if any(next(ckpt_dir.glob(g), None) for g in WEIGHT_GLOBS):
        return AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=dtype, trust_remote_code=spec.model.trust_remote_code)
    if zero_tag(ckpt_dir) is None:
        raise UserError(f"{ckpt_dir} is a full fine-tune checkpoint with neither model*.safetensors nor DeepSpeed "
                        "global_step*/ shards. Fix: point at a complete checkpoint folder.")
    return _from_zero_shards(ckpt_dir, spec)


def zero_tag(ckpt_dir: Path) -> str | None:
    """The DeepSpeed checkpoint tag (global_stepN) in a folder: the `latest` file, else the highest step."""
    latest = ckpt_dir / "latest"
    if latest.is_file() and (ckpt_dir / latest.read_text().strip()).is_dir():
        return latest.read_text().strip()
    steps = sorted((p for p in ckpt_dir.glob("global_step*") if p.is_dir() and any(p.glob("*model_states.pt"))),
                   key=lambda p: int("".join(ch for ch in p.name if ch.isdigit()) or 0))
    return steps[-1].name if steps else None


def _from_zero_shards(ckpt_dir: Path, spec: JobSpec):
    """Consolidate ZeRO-2/3 shards (zero_pp_rank_*) into one model, so users never convert them by hand."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=zero_tag(ckpt_dir))
    source = ckpt_dir if (ckpt_dir / "config.json").is_file() else resolve_base(spec.model.base)
    config = AutoConfig.from_pretrained(source, trust_remote_code=spec.model.trust_remote_code)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=spec.model.trust_remote_code)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if _is_tied(model, k)}
    if set(missing) - tied or unexpected:
        raise UserError(f"the DeepSpeed shards in {ckpt_dir} do not fit {spec.model.base}: missing "
                        f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}. "
                        "Fix: merge with the base model the run was trained from (manifest base_model).")
    model.tie_weights()
    _copy_generation_config(model, spec)
    return model.to(DTYPES[spec.model.dtype])


def _is_tied(model, key: str) -> bool:
    """A weight absent from the shards because it shares storage with the input embeddings."""
    out = model.get_output_embeddings()
    return bool(model.config.get_text_config().tie_word_embeddings) and out is not None and key.startswith("lm_head")


def _copy_generation_config(model, spec: JobSpec) -> None:
    from transformers import GenerationConfig

    try:
        model.generation_config = GenerationConfig.from_pretrained(resolve_base(spec.model.base))
    except OSError:  # the base has no generation_config.json: keep the one derived from the config
        pass
