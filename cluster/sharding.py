"""The sharding backends a spec can choose (`cluster.sharding`), and what each one splits across the workers.

One entry per backend: the spec validates against this table, the planner divides memory by it, and the worker
loop picks the engine from it (`cluster/training/deepspeed_config.py` for DeepSpeed, `cluster/training/fsdp.py`
for FSDP2). Backends that split the weights also load them split (`cluster/model/sharded_load.py`): each decoder
layer is read, quantized for QLoRA and partitioned before the next, so no worker ever holds the whole model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Sharding:
    """What one backend splits across N workers, and how it resumes on another worker count."""

    name: str
    engine: str  # "ddp", "deepspeed" or "fsdp2"
    zero_stage: int  # DeepSpeed's ZeRO stage; 0 when the engine is not DeepSpeed
    shards_states: bool  # gradients and optimizer states: each worker keeps 1/N
    shards_weights: bool  # weights too (QLoRA's 4-bit base included), loaded already split
    reshard: str  # how a checkpoint written by another worker count is loaded
    summary: str


SHARDINGS: dict[str, Sharding] = {
    s.name: s
    for s in (
        Sharding(
            "ddp",
            "ddp",
            0,
            False,
            False,
            "nothing to reshard (every worker holds everything)",
            "every worker holds the whole model, its gradients and optimizer states; gradients are averaged (DDP)",
        ),
        Sharding(
            "deepspeed_zero2",
            "deepspeed",
            2,
            True,
            False,
            "DeepSpeed's universal checkpoint, converted on the worker",
            "DeepSpeed ZeRO-2: gradients and optimizer states are split across workers, weights are whole on each",
        ),
        Sharding(
            "deepspeed_zero3",
            "deepspeed",
            3,
            True,
            True,
            "DeepSpeed's universal checkpoint, converted on the worker",
            "DeepSpeed ZeRO-3: weights, gradients and optimizer states are split; each layer is gathered for its use",
        ),
        Sharding(
            "fsdp2",
            "fsdp2",
            0,
            True,
            True,
            "torch.distributed.checkpoint reshards on load",
            "PyTorch FSDP2 (fully_shard): weights, gradients and optimizer states are split; each layer is gathered for its use",
        ),
    )
}

# The deprecated `cluster.deepspeed` values and the `cluster.sharding` each one means.
DEEPSPEED_SPELLINGS = {"none": "ddp", "zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3"}


@contextlib.contextmanager
def without_zero3_init():
    """Build a model plainly although a ZeRO-3 DeepSpeed config is alive in this process.

    While a Trainer's ZeRO-3 config exists (its TrainingArguments, or TRL's DPOConfig/KTOConfig/GRPOConfig, created
    before the model is loaded), transformers builds every model inside DeepSpeed's `zero.Init`, which partitions
    each parameter as it is created: on the meta device that fails (`Cannot copy out of meta tensor`). The planner's
    meta models and the layer-by-layer sharded loader (cluster/model/sharded_load.py), which partitions on its own,
    build under this; the config is hidden for the duration and put back.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    kept = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = kept
