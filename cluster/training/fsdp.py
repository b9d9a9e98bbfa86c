"""FSDP2 (`cluster.sharding: fsdp2`): PyTorch's `fully_shard` through transformers' Trainer and accelerate.

The model is sharded as it loads (`shard_module`, called per decoder layer by cluster/model/sharded_load.py), so
accelerate finds it already an `FSDPModule` and only prepares the optimizer around it. What the Trainer saves is
torch.distributed.checkpoint (DCP) state, one file per rank, which DCP reshards when a run resumes on another
worker count; `ConsolidatedWeights` adds to every checkpoint the whole adapter (or model) in safetensors, which
merge, evaluation and serving read as they read any other checkpoint.

On CPU, accelerate never selects FSDP: its state picks FSDP only for GPU-like distributed types, so the Trainer
silently ran plain DDP with `fsdp=` set (every worker held the whole model). `trainer_on_cpu` lifts that while the
Trainer is built, which is how the CPU tests and the benchmark really shard (checked by per-rank parameter bytes).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from cluster.spec import JobSpec

# The Trainer's DCP folders in a checkpoint (accelerate's FSDP_MODEL_NAME and optimizer folder, model index 0).
DCP_FOLDERS = ("pytorch_model_fsdp_0", "optimizer_0")


def shard_module(module: torch.nn.Module, spec: JobSpec, on_gpu: bool) -> None:
    """`fully_shard` one module (a decoder layer, or the whole model last) over every worker: each keeps 1/N of
    its parameters; parameters offloaded to host RAM with `cluster.offload_params`."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    half = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(spec.model.dtype) if on_gpu else None
    fully_shard(
        module,
        reshard_after_forward=True,  # gather each layer for its forward and again for its backward: least memory
        offload_policy=CPUOffloadPolicy(pin_memory=on_gpu) if spec.cluster.offload_params else OffloadPolicy(),
        # Compute in the half dtype, reduce gradients in float32; the sharded parameters keep the dtype they were
        # loaded in (float32 for a full fine-tune: the optimizer's master weights).
        mp_policy=MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32) if half else MixedPrecisionPolicy(),
    )


def fsdp_trainer_args(spec: JobSpec) -> dict[str, Any]:
    """The TrainingArguments that make the Trainer treat the (already sharded) model as FSDP2: sharded DCP
    checkpoints, CPU offload as the spec says. Activation checkpointing stays the Trainer's own
    (`gradient_checkpointing`), which FSDP2 runs per decoder layer."""
    if spec.cluster.sharding != "fsdp2":
        return {}
    return {
        "fsdp": "full_shard",
        "fsdp_config": {
            "version": 2,
            "state_dict_type": "SHARDED_STATE_DICT",
            "reshard_after_forward": True,
            "offload_params": spec.cluster.offload_params,
            "cpu_ram_efficient_loading": False,  # loading is already sharded
            "activation_checkpointing": False,
        },
    }


@contextmanager
def trainer_on_cpu(spec: JobSpec, on_gpu: bool):
    """While the Trainer is built: let accelerate select FSDP for CPU workers (and for one worker) when the Trainer
    asks for it. accelerate 1.16's `AcceleratorState` leaves `DistributedType.MULTI_CPU` out of the types that may
    become FSDP; the FSDP2 code paths themselves run on CPU tensors over gloo."""
    if spec.cluster.sharding != "fsdp2" or on_gpu:
        yield
        return
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        plain = (DistributedType.MULTI_CPU, DistributedType.NO)
        if fsdp_plugin is not None and self.distributed_type in plain and dist.is_initialized():
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = patched
    try:
        yield
    finally:
        AcceleratorState.__init__ = init


class ConsolidatedWeights(TrainerCallback):
    """At every save, before the checkpoint is uploaded: the whole adapter (LoRA/QLoRA) or model (full) gathered
    from the shards and written by rank 0 in safetensors, with the tokenizer, as a DDP checkpoint holds them.
    The DCP folders beside it are for resume only."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        from peft import PeftModel
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        adapter = isinstance(model, PeftModel)
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=adapter)
        )
        if self.rank == 0:
            model.save_pretrained(folder, state_dict=full, safe_serialization=True)
            if processing_class is not None:
                processing_class.save_pretrained(folder)
        if dist.is_initialized():
            dist.barrier()
