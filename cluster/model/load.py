"""Loading the tokenizer and the model to train: full weights, LoRA adapters, or LoRA on a 4-bit base (QLoRA).

Under ZeRO-3 and FSDP2 the model is loaded straight into this worker's shards, a decoder layer at a time
(cluster/model/sharded_load.py), so no worker ever holds the whole model, a QLoRA's 4-bit base included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cluster.errors import UserError
from cluster.model.source import resolve_base
from cluster.sharding import SHARDINGS
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

    if SHARDINGS[spec.cluster.sharding].shards_weights:
        return _load_sharded(spec, ds_config, on_gpu, device_index, wrap_adapter, source)
    kwargs: dict[str, Any] = {
        "dtype": train_dtype(spec, on_gpu),
        "attn_implementation": spec.model.attn_implementation,
        "revision": spec.model.revision,
        "trust_remote_code": spec.model.trust_remote_code,
    }
    if spec.model.method == "qlora":
        kwargs["quantization_config"] = bnb_config(spec, on_gpu)
        kwargs["device_map"] = {"": device_index} if on_gpu else "cpu"
    model = AutoModelForCausalLM.from_pretrained(source or resolve_base(spec.model.base), **kwargs)
    # Packed rows are only correct with the cache off (docs/platform-notes.md); training never needs the cache.
    model.config.use_cache = False
    if spec.model.method == "full":
        return model
    return _with_adapter(model, spec, wrap_adapter)


def _load_sharded(spec: JobSpec, ds_config, on_gpu: bool, device_index: int, wrap_adapter: bool, source: str | None):
    """ZeRO-3 and FSDP2: the model loaded straight into this worker's shards (cluster/model/sharded_load.py).

    Under FSDP2 LoRA is added before the layers are split (fully_shard shards only the parameters a module has
    when it is wrapped), so the model comes back wrapped whatever `wrap_adapter` says; under ZeRO-3 it is added
    after, as for an unsharded model, and DeepSpeed partitions the adapters when training starts. Either way the
    adapters start from the same random draws as `get_peft_model` on a whole model. PEFT's
    `prepare_model_for_kbit_training` is not run: its float32 casts would change parameters already split; norms
    and embeddings stay in the training dtype.
    """
    from peft import get_peft_model

    from cluster.model.sharded_load import load_sharded, weight_files_of

    files = weight_files_of(Path(source)) if source else base_weight_files(spec)
    if not files:
        raise UserError(
            f"model.base {spec.model.base}: cluster.sharding {spec.cluster.sharding} loads weights from safetensors "
            "files, and this model has none. Fix: convert it to safetensors (save_pretrained), or use sharding ddp."
        )
    config = load_folder_config(Path(source), spec) if source else load_base_config(spec)
    config.use_cache = False  # packed rows are only correct with the cache off (docs/platform-notes.md)
    adapter = spec.model.method != "full"
    adapter_first = adapter and spec.cluster.sharding == "fsdp2"
    # FSDP2 keeps a full fine-tune's sharded weights in float32 (the optimizer's master copy) and computes in the
    # half dtype (cluster/training/fsdp.py); ZeRO-3 keeps its own float32 copy in the optimizer.
    fp32_master = spec.model.method == "full" and spec.cluster.sharding == "fsdp2"
    model = load_sharded(
        spec,
        config,
        files,
        torch.float32 if fp32_master else train_dtype(spec, on_gpu),
        torch.device("cuda", device_index) if on_gpu else torch.device("cpu"),
        _partition(spec, ds_config, on_gpu),
        bnb=bnb_config(spec, on_gpu, sharded=True) if spec.model.method == "qlora" else None,
        adapter=lora_config(spec) if adapter_first else None,
        # TRL's SFTTrainer casts a 4-bit model's adapters to bfloat16 (the QLoRA paper's recipe); here it must
        # happen before the layers are split, and TRL's own cast then changes nothing.
        adapter_dtype=torch.bfloat16 if spec.model.method == "qlora" else None,
    )
    if adapter or spec.train.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings would otherwise cut the graph
    if not adapter or adapter_first or not wrap_adapter:
        return model
    return get_peft_model(model, lora_config(spec))


def _partition(spec: JobSpec, ds_config, on_gpu: bool):
    """What splits one module across the workers as it loads: ZeRO-3's `zero.Init(module=...)`, or FSDP2's
    `fully_shard`. `ds_config` must be the exact config the Trainer will use."""
    if spec.cluster.sharding == "deepspeed_zero3":
        import deepspeed

        return lambda module: deepspeed.zero.Init(module=module, config_dict_or_path=ds_config)
    from cluster.training.fsdp import shard_module

    return lambda module: shard_module(module, spec, on_gpu)


def bnb_config(spec: JobSpec, on_gpu: bool, sharded: bool = False):
    """bitsandbytes 4-bit settings from `model.quantization`. `sharded` (ZeRO-3, FSDP2): the packed weights are
    stored in the training dtype (float32 on CPU), a float type the sharding splits and gathers like any weight
    (PEFT's DeepSpeed and FSDP QLoRA guides); the spec refuses any other storage_dtype there. The packed values are
    the same whatever the storage dtype, so merge and evaluation load the base with the default."""
    from transformers import BitsAndBytesConfig

    q = spec.model.quantization
    storage_dtype = train_dtype(spec, on_gpu) if sharded else getattr(torch, q.storage_dtype or "uint8")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype] if on_gpu else torch.float32,
        bnb_4bit_quant_storage=storage_dtype,
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
