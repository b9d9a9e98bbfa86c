"""The streaming merge: a LoRA or QLoRA export written tensor by tensor, reading the base one safetensors shard at a time.

Peak memory is the adapter, the largest adapted linear weight, and one slice of the tensor being copied: never a
whole shard, never the whole model. The base's shards are read with plain file reads (cluster.merge.safetensors_io),
one at a time. Weights that the
adapter does not touch are copied in row slices, cast to the export dtype. Adapted weights get `W + scale * B @ A`,
as PEFT's `merge_and_unload(safe_merge=True)` computes it; for QLoRA into the dequantized base, W is first quantized
to 4 bits and dequantized exactly as bitsandbytes does when transformers loads the base (cluster.merge.quantized).

What cannot stream falls back to the in-memory merge (cluster.merge.weights), and `streaming_blocker` says why:
full fine-tunes (the checkpoint is the model), adapters other than plain LoRA on linear layers (DoRA, LoRA on
embeddings, modules_to_save, rank or alpha patterns, LoRA biases), and bases without safetensors files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from cluster.merge.safetensors_io import ShardedWriter, ShardReader
from cluster.model.load import DTYPES, base_weight_files, load_base_config, load_base_generation_config
from cluster.spec import JobSpec

ADAPTER_FILE, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_PREFIX = "base_model.model."
SLICE_BYTES = 4 * 2**20  # bytes of one copied slice (as float32): small against any shard, large enough to write fast


def streaming_blocker(ckpt_dir: Path, spec: JobSpec) -> str | None:
    """Why this checkpoint cannot be merged streaming, or None when it can."""
    if spec.model.method == "full":
        return "a full fine-tune checkpoint is the model itself (ZeRO shards are consolidated in memory)"
    if not (ckpt_dir / ADAPTER_FILE).is_file() or not (ckpt_dir / ADAPTER_CONFIG).is_file():
        return f"the checkpoint has no {ADAPTER_FILE} and {ADAPTER_CONFIG}"
    cfg = json.loads((ckpt_dir / ADAPTER_CONFIG).read_text())
    unsupported = {
        "peft_type": cfg.get("peft_type") != "LORA",
        "use_dora": cfg.get("use_dora"),
        "modules_to_save": cfg.get("modules_to_save"),
        "rank_pattern": cfg.get("rank_pattern"),
        "alpha_pattern": cfg.get("alpha_pattern"),
        "fan_in_fan_out": cfg.get("fan_in_fan_out"),
        "lora_bias": cfg.get("lora_bias"),
    }
    found = [k for k, bad in unsupported.items() if bad]
    if found:
        return f"the adapter uses {', '.join(found)}, which only PEFT's in-memory merge handles"
    other = [k for k in _adapter_keys(ckpt_dir) if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if other:
        return f"the adapter holds tensors other than LoRA A and B of linear layers ({other[0]}, ...)"
    files = base_weight_files(spec)
    if not files:
        return "the base has no safetensors files"
    names = _names(files)
    deltas = adapter_deltas(ckpt_dir)
    missing = sorted(set(deltas) - names)
    if missing:
        return f"the adapter changes weights the base's files do not hold under the same name ({missing[0]}, ...)"
    return None


def adapter_deltas(ckpt_dir: Path) -> dict[str, tuple[str, str, float]]:
    """{base weight name: (lora_A key, lora_B key, scale)} for every linear layer the adapter changes."""
    cfg = json.loads((ckpt_dir / ADAPTER_CONFIG).read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    out = {}
    for key in _adapter_keys(ckpt_dir):
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            out[module.removeprefix(PEFT_PREFIX) + ".weight"] = (key, module + ".lora_B.weight", scale)
    return out


def _adapter_keys(ckpt_dir: Path) -> list[str]:
    with ShardReader(ckpt_dir / ADAPTER_FILE) as reader:
        return list(reader.entries)


def stream_merge(ckpt_dir: Path, spec: JobSpec, into: str, out_dir: Path, max_shard_size: int) -> None:
    """Write the merged model (safetensors shards, index, config.json, generation_config.json) into `out_dir`."""
    from safetensors.torch import load_file

    dtype = DTYPES[spec.model.dtype]
    files = base_weight_files(spec)
    deltas = adapter_deltas(ckpt_dir)
    fourbit = {}
    if spec.model.method == "qlora" and into == "dequantized":
        from cluster.merge.quantized import fourbit_layers

        fourbit = fourbit_layers(spec, dtype)
    adapter = load_file(ckpt_dir / ADAPTER_FILE)  # small: rank r against the hidden size
    layout = []
    for path in files:
        with ShardReader(path) as reader:
            layout += [(name, _out_dtype(dt, dtype), shape) for name, dt, shape in reader.layout()]
    writer = ShardedWriter(out_dir, layout, max_shard_size)
    for path in files:
        with ShardReader(path) as reader:
            for name, stored, shape in reader.layout():
                if name in deltas or name in fourbit:
                    weight = reader.read(name).to(dtype)
                    writer.write(name, _merged(weight, deltas.get(name), adapter, fourbit.get(name)))
                    continue
                for rows in _row_slices(shape, stored):
                    writer.write(name, reader.read(name, rows).to(_out_dtype(stored, dtype)))
    writer.close()
    _write_configs(spec, dtype, out_dir)


def _merged(weight: torch.Tensor, delta: tuple | None, adapter: dict, fourbit: dict | None) -> torch.Tensor:
    """One linear weight of the export: 4-bit round trip (QLoRA into the dequantized base), then the adapter's update."""
    if fourbit is not None:
        from cluster.merge.quantized import roundtrip

        weight = roundtrip(weight, fourbit)
    if delta is not None:
        a_key, b_key, scale = delta
        # PEFT's get_delta_weight: B @ A in float32, times the scale, cast to the base's dtype and added in place.
        update = (adapter[b_key].float() @ adapter[a_key].float()) * scale
        weight = weight + update.to(weight.dtype)
    return weight


def _row_slices(shape: tuple[int, ...], dtype: torch.dtype):
    """Row ranges [a, b) of about SLICE_BYTES each (a scalar or empty tensor is one range)."""
    if not shape or shape[0] == 0:
        yield None
        return
    step = max(1, SLICE_BYTES // max(1, math.prod(shape[1:]) * max(dtype.itemsize, 4)))
    for start in range(0, shape[0], step):
        yield start, min(start + step, shape[0])


def _out_dtype(stored: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """Floating weights take the export dtype (as `from_pretrained(dtype=...)` casts them); integer buffers stay."""
    return dtype if stored.is_floating_point else stored


def _names(files: list[Path]) -> set[str]:
    names = set()
    for path in files:
        with ShardReader(path) as reader:
            names.update(reader.entries)
    return names


def _write_configs(spec: JobSpec, dtype: torch.dtype, out_dir: Path) -> None:
    """config.json (dtype set to the export's) and generation_config.json, as `save_pretrained` writes them."""
    from transformers import GenerationConfig

    config = load_base_config(spec)
    config.dtype = dtype
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out_dir)
    generation = load_base_generation_config(spec) or GenerationConfig.from_model_config(config)
    generation.save_pretrained(out_dir)
