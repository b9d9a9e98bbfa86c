"""Loading the tokenizer and the model to train: full weights, LoRA adapters, or LoRA on a 4-bit base (QLoRA).

For ZeRO-3 the DeepSpeed config is made live (transformers' `HfDeepSpeedConfig`) before `from_pretrained`,
so `deepspeed.zero.Init` partitions each weight as it is created and no worker ever holds the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cluster.model.source import resolve_base
from cluster.spec import JobSpec

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def load_tokenizer(spec: JobSpec):
    """The base model's tokenizer, with the spec's chat template and a pad token (eos when the base has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        resolve_base(spec.model.base), revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )
    if spec.model.chat_template:
        tok.chat_template = spec.model.chat_template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def train_dtype(spec: JobSpec, on_gpu: bool) -> torch.dtype:
    """Dtype of the trained weights: the spec's on GPU; float32 on CPU, where half-precision training is unsupported."""
    return DTYPES[spec.model.dtype] if on_gpu else torch.float32


def load_model(
    spec: JobSpec,
    ds_config: dict[str, Any] | None = None,
    on_gpu: bool = False,
    device_index: int = 0,
    wrap_adapter: bool = True,
    source: str | None = None,
):
    """The model ready for the Trainer: full weights, or a PEFT model for lora/qlora.

    With `wrap_adapter=False` a lora/qlora base comes back prepared but unwrapped, for a trainer that adds the
    adapter itself from `lora_config(spec)` (TRL's DPO/KTO then use the base with the adapter disabled as reference).
    `source` is a local folder of full weights to start from instead of the base (a warm start from an export).
    `ds_config` must be the exact config the Trainer will use; with ZeRO-3 its parameters come back partitioned
    (each has `ds_numel` for the full size and a `ds_tensor` holding this rank's shard).
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": train_dtype(spec, on_gpu),
        "attn_implementation": spec.model.attn_implementation,
        "revision": spec.model.revision,
        "trust_remote_code": spec.model.trust_remote_code,
    }
    if spec.model.method == "qlora":
        kwargs["quantization_config"] = bnb_config(spec, on_gpu)
        kwargs["device_map"] = {"": device_index} if on_gpu else "cpu"
    live = _zero3_live(ds_config)  # must stay referenced until from_pretrained returns
    model = AutoModelForCausalLM.from_pretrained(source or resolve_base(spec.model.base), **kwargs)
    del live
    # Packed rows are only correct with the cache off (docs/platform-notes.md); training never needs the cache.
    model.config.use_cache = False
    if spec.model.method == "full":
        return model
    return _with_adapter(model, spec, wrap_adapter)


def bnb_config(spec: JobSpec, on_gpu: bool):
    """bitsandbytes 4-bit settings from `model.quantization`."""
    from transformers import BitsAndBytesConfig

    q = spec.model.quantization
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype] if on_gpu else torch.float32,
        bnb_4bit_quant_storage=getattr(torch, q.storage_dtype),
    )


# Loading for merge and evaluation: the trained artefact's base at the spec's revision, exports and checkpoints from
# their folder (safetensors only), adapters through PEFT. Callers pass the dtype the run really trained in.


def load_base(spec: JobSpec, dtype: torch.dtype):
    """The untrained base in full precision at the spec's revision: what a LoRA merges into and evaluation scores."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_base(spec.model.base),
        dtype=dtype,
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
        attn_implementation=spec.model.attn_implementation,
    )


def load_quantized_base(spec: JobSpec, dtype: torch.dtype):
    """The 4-bit base as training loaded it, at the spec's revision (bitsandbytes quantization is deterministic)."""
    from transformers import AutoModelForCausalLM

    on_gpu = torch.cuda.is_available()
    return AutoModelForCausalLM.from_pretrained(
        resolve_base(spec.model.base),
        quantization_config=bnb_config(spec, on_gpu),
        dtype=dtype,
        device_map={"": 0} if on_gpu else "cpu",
        revision=spec.model.revision,
        trust_remote_code=spec.model.trust_remote_code,
    )


def load_base_config(spec: JobSpec):
    """The base model's transformers config at the spec's revision."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        resolve_base(spec.model.base), revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )


def load_folder_config(folder: Path, spec: JobSpec):
    """The transformers config saved in a checkpoint or export folder."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, trust_remote_code=spec.model.trust_remote_code)


def load_base_generation_config(spec: JobSpec):
    """The base's generation_config.json at the spec's revision, or None when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(resolve_base(spec.model.base), revision=spec.model.revision)
    except OSError:
        return None


def base_weight_files(spec: JobSpec) -> list[Path] | None:
    """The base's safetensors files at the spec's revision (downloaded once for a hub id); None when it has none."""
    source = resolve_base(spec.model.base)
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, revision=spec.model.revision, allow_patterns=["*.safetensors", "*.json"]))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else None


def load_folder_model(folder: Path, dtype: torch.dtype, spec: JobSpec):
    """A full model saved by rayfit (an export, a full fine-tune checkpoint): safetensors only, never pickle."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, use_safetensors=True, trust_remote_code=spec.model.trust_remote_code
    )


def load_folder_tokenizer(folder: Path, spec: JobSpec):
    """The tokenizer saved in a checkpoint or export (it carries the chat template trained with), else the spec's."""
    from transformers import AutoTokenizer

    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=spec.model.trust_remote_code)
    return load_tokenizer(spec)


def empty_model(config, dtype: torch.dtype, spec: JobSpec):
    """The model of `config` on the meta device: its module tree without memory, to know which weights are linear."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=spec.model.trust_remote_code)


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """`model` wrapped with the PEFT adapter saved in `adapter_dir`: for inference, or `trainable` for a warm start."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def lora_config(spec: JobSpec):
    """The PEFT `LoraConfig` of `model.lora`."""
    from peft import LoraConfig

    lo = spec.model.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        modules_to_save=lo.modules_to_save or None,
        use_rslora=lo.use_rslora,
        task_type="CAUSAL_LM",
    )


def _with_adapter(model, spec: JobSpec, wrap: bool = True):
    from peft import get_peft_model, prepare_model_for_kbit_training

    if spec.model.method == "qlora":
        # Casts norms to fp32 and enables input grads so checkpointed activations reach the adapters.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=spec.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif spec.train.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings would otherwise cut the graph
    return get_peft_model(model, lora_config(spec)) if wrap else model


def _zero3_live(ds_config: dict[str, Any] | None):
    """Make a ZeRO-3 config visible to `from_pretrained` (it calls `zero.Init`) for as long as the result lives."""
    if not ds_config or ds_config["zero_optimization"]["stage"] != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)
