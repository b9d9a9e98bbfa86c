"""The 4-bit base a QLoRA adapter was trained against: its weights dequantized, from a live model or one at a time.

The trap (docs/platform-notes.md): on CPUs with AVX512-BF16 a no-grad forward repacks `Linear4bit` weights into a
CPU-only layout, after which `dequantize_4bit`, `model.dequantize()` and PEFT merges return garbage. Calling a
module's `state_dict()` converts the layout back, so `dequantized_weights` does that first for every layer: the
result is right whatever ran on the model before. The streaming merge (`fourbit_layers` + `roundtrip`) never runs
a forward, so its freshly quantized weights are never repacked.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cluster.model.load import bnb_config, empty_model, load_base_config
from cluster.model.sharded_load import hf_name
from cluster.spec import JobSpec


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


def fourbit_layers(spec: JobSpec, dtype: torch.dtype) -> dict[str, dict]:
    """{weight name: Params4bit settings} of every weight that loading `spec`'s base in 4 bits quantizes.

    Asks transformers itself, on a meta-device model (no memory): its bitsandbytes quantizer picks the modules to
    skip (lm_head, tied and fp32-kept weights) and `replace_with_bnb_linear` swaps the rest for `Linear4bit`.
    """
    import bitsandbytes as bnb
    from transformers.integrations import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    config = bnb_config(spec, torch.cuda.is_available())
    model = empty_model(load_base_config(spec), dtype, spec)
    skip = HfQuantizer.get_modules_to_not_convert(model, config.llm_int8_skip_modules, model._keep_in_fp32_modules)
    model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=config)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            if module.source_cls is not torch.nn.Linear:
                raise NotImplementedError(f"{name} is a {module.source_cls.__name__}, not nn.Linear")
            w = module.weight
            out[f"{name}.weight"] = {
                "blocksize": w.blocksize,
                "compress_statistics": w.compress_statistics,
                "quant_type": w.quant_type,
                "quant_storage": w.quant_storage,
            }
    return out


def roundtrip(weight: torch.Tensor, settings: dict) -> torch.Tensor:
    """`weight` quantized to 4 bits and dequantized exactly as bitsandbytes does when transformers loads it
    (`Params4bit(value, **meta_param.__dict__).to(device)`), in `weight`'s dtype and on its device."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    param = bnb.nn.Params4bit(weight, requires_grad=False, **settings).to(weight.device)
    return dequantize_4bit(param.data, param.quant_state).to(weight.dtype)
