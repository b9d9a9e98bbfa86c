"""Loading a model straight into shards (ZeRO-3, FSDP2): no worker ever holds the whole model, QLoRA's 4-bit base too.

`from_pretrained` builds the whole model on each worker before a sharding backend can split it: transformers skips
ZeRO-3's partitioned init for quantized models (`modeling_utils`: no `zero.Init` when `is_quantized`), and FSDP2
shards only weights that exist. Here the model is built on the meta device, its linear layers swapped for
bitsandbytes' `Linear4bit` for QLoRA (transformers' own `replace_with_bnb_linear`, skipping what it skips) and
LoRA added by PEFT; then each decoder layer in turn gets its weights from the safetensors files (read a tensor at
a time with file reads, never a memory map), is quantized and handed to the backend's `partition`, which keeps
this worker's share and frees the rest. The embeddings, final norm and head go last, with the whole model.

The 4-bit weights are stored in the training dtype (`bnb_4bit_quant_storage`, as PEFT's DeepSpeed and FSDP QLoRA
guides do): ZeRO-3 and FSDP2 split and gather them as plain float tensors, and each `Linear4bit` keeps its
quantization state, which bitsandbytes finds again on the module after every gather.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch

from cluster.errors import UserError
from cluster.spec import JobSpec

PEFT_PREFIX = "base_model.model."


def hf_name(module_name: str) -> str:
    """The plain transformers name of a module or parameter inside a PeftModel (drops PEFT's wrapper prefixes)."""
    return module_name.removeprefix(PEFT_PREFIX).replace(".base_layer", "")


def load_sharded(
    spec: JobSpec,
    config,
    weight_files: list[Path],
    dtype: torch.dtype,
    device: torch.device,
    partition: Callable[[torch.nn.Module], None],
    bnb=None,
    adapter=None,
    adapter_dtype: torch.dtype | None = None,
):
    """The model of `config` with its weights from `weight_files`, partitioned layer by layer by `partition`.

    `bnb` is a `BitsAndBytesConfig` for QLoRA (4-bit storage in a float dtype), `adapter` a PEFT `LoraConfig`: the
    model comes back wrapped, with adapters initialised exactly as `get_peft_model` on a loaded model would
    (same modules, same order, same random draws), so a sharded run starts where a one-process run starts; in
    `adapter_dtype` when given (a dtype must be final before `partition`: FSDP2 keeps the one a parameter had).
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from cluster.sharding import without_zero3_init

    # buffers (rotary frequencies) are computed, not loaded
    with init_empty_weights(include_buffers=False), without_zero3_init():
        model = AutoModelForCausalLM.from_config(
            config,
            dtype=dtype,
            attn_implementation=spec.model.attn_implementation,
            trust_remote_code=spec.model.trust_remote_code,
        )
    if bnb is not None:
        _to_4bit(model, bnb)
    if adapter is not None:
        model = _with_lora(model, adapter)
        for param in model.parameters():
            if param.requires_grad and adapter_dtype is not None:
                param.data = param.data.to(adapter_dtype)
    with WeightFiles(weight_files) as weights:
        layers = decoder_layers(model)
        names = {id(m): n for n, m in model.named_modules()}
        for layer in layers:
            _fill(layer, names[id(layer)], weights, dtype, device)
            partition(layer)
        base = model.get_base_model() if adapter is not None else model
        tied = {f"{hf_name(names[id(base.get_output_embeddings())])}.weight"} if _ties_embeddings(config) else set()
        _fill(model, "", weights, dtype, device, tied)
        base.tie_weights()  # the head takes the embedding just filled (it was a meta placeholder)
        partition(model)
    return model


class WeightFiles:
    """The tensors of a model's safetensors files by name, each read when asked (one open handle per file)."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.stack = ExitStack()
        self.where: dict[str, object] = {}

    def __enter__(self) -> WeightFiles:
        from cluster.merge.safetensors_io import ShardReader

        for path in self.files:
            reader = self.stack.enter_context(ShardReader(path))
            self.where.update({name: reader for name in reader.entries})
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def read(self, name: str) -> torch.Tensor | None:
        """The tensor `name`, or None when no file has it."""
        reader = self.where.get(name)
        return None if reader is None else reader.read(name)


def decoder_layers(model) -> list:
    """The repeated blocks of a causal LM (the largest ModuleList in it)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def _fill(module, prefix: str, weights: WeightFiles, dtype, device, tied: set[str] = frozenset()) -> None:
    """Give every meta parameter under `module` its weight from the files (a Linear4bit's quantized from `dtype`, as
    `from_pretrained` does), and move the adapters and buffers to `device`."""
    import bitsandbytes as bnb_lib

    for name, sub in module.named_modules(prefix=prefix):
        for pname, param in list(sub.named_parameters(recurse=False)):
            if param.device.type != "meta":
                if _plain(param) and param.device != device:  # an adapter, created on the CPU with its values
                    sub._parameters[pname] = torch.nn.Parameter(param.data.to(device), requires_grad=param.requires_grad)
                continue
            key = hf_name(f"{name}.{pname}" if name else pname)
            value = weights.read(key)
            if value is None:
                if key in tied:
                    continue  # the tied head: it takes the embedding after the fill
                raise UserError(
                    f"model.base: {key} is not in the model's safetensors files, so it cannot be loaded a layer at a "
                    "time (the files name their tensors differently from the model's own names). Fix: load it once "
                    "and save it again with save_pretrained, or use cluster.sharding: ddp or deepspeed_zero2."
                )
            if isinstance(sub, bnb_lib.nn.Linear4bit) and pname == "weight":
                sub.weight = bnb_lib.nn.Params4bit(
                    value.to(dtype),
                    requires_grad=False,
                    blocksize=param.blocksize,
                    compress_statistics=param.compress_statistics,
                    quant_type=param.quant_type,
                    quant_storage=param.quant_storage,
                    module=sub,
                ).to(device)
                # The CPU kernel repacks a weight in place on its first no-grad forward and marks its quantization
                # state; a sharded weight is gathered afresh for every use, so the mark would outlive the repacking.
                sub.support_avx512bf16_for_cpu = False
            else:
                sub._parameters[pname] = torch.nn.Parameter(
                    value.to(device=device, dtype=param.dtype), requires_grad=param.requires_grad
                )
        for bname, buf in list(sub.named_buffers(recurse=False)):
            if buf is not None and buf.device != device:
                sub._buffers[bname] = buf.to(device)


def _plain(param) -> bool:
    """Not yet partitioned: neither a ZeRO-3 parameter nor an FSDP2 DTensor."""
    from torch.distributed.tensor import DTensor

    return not hasattr(param, "ds_id") and not isinstance(param, DTensor)


def _ties_embeddings(config) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text, "tie_word_embeddings", False))


def _to_4bit(model, bnb) -> None:
    """Swap the linears for `Linear4bit` (meta) as transformers does for a 4-bit load, and mark the model as one."""
    from transformers.integrations import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationMethod

    skip = HfQuantizer.get_modules_to_not_convert(model, bnb.llm_int8_skip_modules, model._keep_in_fp32_modules)
    replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=bnb)
    model.is_loaded_in_4bit = True  # what PEFT and the Trainer read to treat it as a 4-bit model
    model.quantization_method = QuantizationMethod.BITS_AND_BYTES
    model.config.quantization_config = bnb


def _with_lora(model, adapter):
    """PEFT's `get_peft_model` on the meta model, with the adapters' values kept on the CPU where PEFT draws them.

    PEFT moves each new adapter to its base weight's device and float dtype; a meta weight would take the values
    with it. While PEFT runs, each linear's weight is an empty CPU tensor of the dtype a loaded model's weight has
    (the training dtype; uint8 for 4-bit, as from_pretrained stores it), so the adapters come out exactly as on a
    loaded model; the meta weights go back after.
    """
    import bitsandbytes as bnb_lib
    from peft import get_peft_model

    stashed = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight is None or weight.device.type != "meta":
            continue
        stashed.append((module, weight))
        if isinstance(module, bnb_lib.nn.Linear4bit):
            module.weight = bnb_lib.nn.Params4bit(
                torch.empty(0, dtype=torch.uint8),
                requires_grad=False,
                compress_statistics=weight.compress_statistics,
                quant_type=weight.quant_type,
                bnb_quantized=True,
            )
        else:
            module.weight = torch.nn.Parameter(torch.empty(0, dtype=weight.dtype), requires_grad=weight.requires_grad)
    model = get_peft_model(model, adapter)
    for module, weight in stashed:
        weight.requires_grad_(module.weight.requires_grad)  # PEFT froze the stand-in
        module._parameters["weight"] = weight
    return model


def weight_files_of(folder: Path) -> list[Path]:
    """The safetensors files of a saved model folder (sharded with an index, or one file)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / n for n in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [folder / "model.safetensors"]
