"""The 4-bit base a QLoRA adapter was trained against, and its weights dequantized safely.

The trap (shared/VERIFIED.md): on CPUs with AVX512-BF16 a no-grad forward repacks `Linear4bit` weights into a
CPU-only layout, after which `dequantize_4bit`, `model.dequantize()` and PEFT merges return garbage. Calling a
module's `state_dict()` converts the layout back, so `dequantized_weights` does that first for every layer: the
result is right whatever ran on the model before.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cluster.spec import JobSpec

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "uint8": torch.uint8}


def bnb_config(spec: JobSpec):
    """The BitsAndBytesConfig a QLoRA run of `spec` loads its base with."""
    from transformers import BitsAndBytesConfig

    q = spec.model.quantization
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype], bnb_4bit_quant_storage=DTYPES[q.storage_dtype],
    )


def load_quantized_base(base_path: str, spec: JobSpec):
    """The 4-bit base as training loaded it (bitsandbytes quantization is deterministic, so this is the same base)."""
    from transformers import AutoModelForCausalLM

    device_map = {"": 0} if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(
        base_path, quantization_config=bnb_config(spec), dtype=DTYPES[spec.model.dtype], device_map=device_map,
        trust_remote_code=spec.model.trust_remote_code,
    )


def hf_name(module_name: str) -> str:
    """The plain transformers name of a module inside a PeftModel (drops PEFT's wrapper prefixes)."""
    return module_name.removeprefix("base_model.model.").replace(".base_layer", "")


def dequantized_weights(model, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(weight name, dequantized weight on CPU) for every 4-bit linear layer of a model or PeftModel."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    for name, module in model.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        module.state_dict()  # undoes the CPU repacking a no-grad forward may have done (see module docstring)
        weight = module.weight
        full = dequantize_4bit(weight.data, weight.quant_state)
        yield hf_name(name) + ".weight", full.to(device="cpu", dtype=dtype)


def load_dequantized_into(fp_model, quantized_model, dtype: torch.dtype) -> int:
    """Overwrite `fp_model`'s linear weights by the dequantized 4-bit ones; returns how many were replaced."""
    params = dict(fp_model.named_parameters())
    count = 0
    with torch.no_grad():
        for name, weight in dequantized_weights(quantized_model, dtype):
            if name not in params or params[name].shape != weight.shape:
                raise RuntimeError(f"4-bit weight {name} {tuple(weight.shape)} has no match in the full-precision base")
            params[name].copy_(weight)
            count += 1
    if count == 0:
        raise RuntimeError("the 4-bit base has no Linear4bit layers; was it loaded with a 4-bit quantization config?")
    return count
