"""Parameter counts and bytes, exact: the model is built on the meta device from its config, LoRA added by PEFT itself."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cluster.errors import UserError
from cluster.sharding import without_zero3_init
from cluster.spec.model import ModelSpec

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
QUANT_BLOCK = 64  # bitsandbytes' default 4-bit block size (Params4bit, quantize_4bit)
NESTED_BLOCK = 256  # block size of the double-quantized absmax (quantize_blockwise)


@dataclass(frozen=True)
class ParamCounts:
    """What the planner needs to know about a model's parameters; bytes are as PyTorch would allocate them."""

    total: int  # parameters of the base model (tied weights once)
    trainable: int  # parameters that get gradients (all for full; adapters + modules_to_save otherwise)
    trainable_tensors: int  # tensors among them (AdamW keeps a `step` tensor per parameter tensor)
    trainable_bytes: int  # their bytes in the dtype they train in (PEFT keeps adapters in float32 on half bases)
    frozen_bytes: int  # bytes of the frozen weights (the 4-bit base for QLoRA)
    largest_block: int  # parameters of the largest decoder layer or embedding (ZeRO-3 gathers one at a time)
    lora_inputs_per_layer: int  # summed in_features of adapted linears per decoder layer (their inputs are saved)
    lora_rank_per_layer: int  # summed ranks of adapted linears per decoder layer
    unquantized: int = 0  # QLoRA: elements of the frozen base that stay unquantized (embeddings, norms, head)

    def to_json(self) -> dict:
        """The counts as a plain dict."""
        return asdict(self)


_CACHE: dict[tuple[str, str], ParamCounts] = {}  # the fit check plans many variants of one model


def count_params(config, model: ModelSpec) -> ParamCounts:
    """Exact counts for `model` (method, dtype, LoRA and 4-bit settings) on the architecture in `config`."""
    key = (config.to_json_string(use_diff=False), model.model_dump_json())
    if key not in _CACHE:
        if len(_CACHE) >= 32:
            _CACHE.clear()
        try:
            _CACHE[key] = _count(config, model)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(
                f"model.base {model.base!r}: cannot build a {config.model_type!r} model from its config.json "
                f"to count parameters ({type(e).__name__}: {e}). Fix: check config.json, or set "
                "model.trust_remote_code if the architecture ships its own code."
            ) from e
    return _CACHE[key]


def _count(config, spec: ModelSpec) -> ParamCounts:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, spec.dtype)
    # torch's meta device rather than accelerate.init_empty_weights: under the latter, transformers 5.23 leaves tied
    # embeddings untied (SmolLM2 would count 162.8M parameters instead of 134.5M).
    with torch.device("meta"), without_zero3_init():
        meta = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=spec.trust_remote_code)
    total = sum(p.numel() for p in meta.parameters())
    largest = max(
        [sum(p.numel() for p in layer.parameters()) for layer in _decoder_layers(meta)]
        + [meta.get_input_embeddings().weight.numel()]
    )
    unquantized = 0
    if spec.method == "qlora":
        base_bytes, unquantized = _quantized_bytes(meta, spec)
    else:
        base_bytes = sum(p.numel() * p.element_size() for p in meta.parameters())
    if spec.method == "full":
        tensors = list(meta.parameters())
        return ParamCounts(total, total, len(tensors), base_bytes, 0, largest, 0, 0)
    repeats = _truncate_to_one_layer(meta, spec) if _identical(_decoder_layers(meta)) else 1
    with torch.device("meta"):
        peft_model = _with_lora(meta, spec)
    # With identical layers, PEFT runs on the model cut to one layer and that layer's adapters count `repeats`
    # times: the same numbers as on the whole model, in milliseconds instead of seconds for a 70B model.
    weighted = [(p, repeats if _in_layers(n) else 1) for n, p in peft_model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() * k for p, k in weighted)
    # PEFT makes adapters float32 on a half base; for QLoRA, TRL's SFTTrainer then casts them to bfloat16.
    trainable_bytes = 2 * n_trainable if spec.method == "qlora" else sum(p.numel() * p.element_size() * k for p, k in weighted)
    inputs, ranks = _lora_shapes(peft_model, 1 if repeats > 1 else config.num_hidden_layers)
    # modules_to_save: the frozen original is in base_bytes, its trained copy in trainable_bytes
    return ParamCounts(
        total, n_trainable, sum(k for _, k in weighted), trainable_bytes, base_bytes, largest, inputs, ranks, unquantized
    )


LAYER_LIST = ".layers."


def _in_layers(name: str) -> bool:
    return LAYER_LIST in f".{name}"


def _identical(layers) -> bool:
    """Whether every decoder layer has the same parameter names and shapes (true of Llama, Qwen2, Mistral)."""
    signature = [tuple((n, tuple(p.shape)) for n, p in layer.named_parameters()) for layer in layers]
    return len(signature) > 1 and all(sig == signature[0] for sig in signature)


def _truncate_to_one_layer(meta, spec: ModelSpec) -> int:
    """Keep only the first decoder layer (in its `.layers` list) when adapters are chosen by module name alone;
    returns how many layers it stands for (1 when the model is left whole)."""
    import torch

    names = [] if spec.lora.target_modules == "all-linear" else spec.lora.target_modules
    if any("." in n or any(ch.isdigit() for ch in n) for n in names + spec.lora.modules_to_save):
        return 1  # a name that could pick out one layer: count on the whole model
    for module in meta.modules():
        for attr, child in module.named_children():
            if attr == "layers" and isinstance(child, torch.nn.ModuleList) and len(child) > 1:
                setattr(module, attr, torch.nn.ModuleList([child[0]]))
                return len(child)
    return 1


def _decoder_layers(model) -> list:
    """The repeated blocks of a causal LM (the largest ModuleList in it)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else [model]


def _with_lora(meta, spec: ModelSpec):
    """PEFT's own get_peft_model on the meta model, so 'all-linear' resolves exactly as it will in training."""
    from peft import LoraConfig, get_peft_model

    lora = spec.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=lora.modules_to_save or None,
        use_rslora=lora.use_rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(meta, config)


def _lora_shapes(peft_model, num_layers: int) -> tuple[int, int]:
    """Per decoder layer: summed in_features and summed ranks of the adapted linears."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    inputs = sum(m.in_features for m in layers)
    ranks = sum(sum(m.r.values()) for m in layers)
    return math.ceil(inputs / num_layers), math.ceil(ranks / num_layers)


def _quantized_bytes(meta, spec: ModelSpec) -> tuple[int, int]:
    """Bytes of the base once bitsandbytes has made every linear but the output head 4-bit (transformers' default)
    and PEFT's prepare_model_for_kbit_training has cast everything left (embeddings, norms, head) to float32; and
    the number of elements left unquantized."""
    import torch

    head = meta.get_output_embeddings()
    quantized = {id(m.weight) for m in meta.modules() if isinstance(m, torch.nn.Linear) and m is not head}
    total = rest = 0
    for p in meta.parameters():
        if id(p) in quantized:
            total += linear4bit_bytes(p.numel(), spec.quantization.double_quant)
        else:
            total += p.numel() * 4
            rest += p.numel()
    return total, rest


def linear4bit_bytes(numel: int, double_quant: bool) -> int:
    """Bytes bitsandbytes allocates for one 4-bit weight: packed nibbles plus its quantization state."""
    blocks = math.ceil(numel / QUANT_BLOCK)
    packed, code = math.ceil(numel / 2), 16 * 4
    if not double_quant:
        return packed + blocks * 4 + code
    # absmax as uint8, its own fp32 absmax per 256 blocks, the 256-entry blockwise code and the fp32 offset
    return packed + blocks + math.ceil(blocks / NESTED_BLOCK) * 4 + 256 * 4 + 4 + code
