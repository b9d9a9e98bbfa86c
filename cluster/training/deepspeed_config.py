"""DeepSpeed ZeRO configs built from the spec, with every value explicit.

No "auto" values: the same dict partitions the weights as they load (`zero.Init(module=...)`, one decoder layer at a
time, cluster/model/sharded_load.py) and goes to the Trainer, and `zero.Init` cannot resolve "auto".
"""

from __future__ import annotations

import sys
from typing import Any

from cluster.spec import JobSpec

# Bucket sizes (elements) that work from 135M to 70B models; DeepSpeed's own defaults are in the same range.
REDUCE_BUCKET = 50_000_000
PREFETCH_BUCKET = 50_000_000
PARAM_PERSISTENCE_THRESHOLD = 100_000  # DeepSpeed's default, for when the model's width is not known


def import_deepspeed():
    """DeepSpeed, imported without the mlflow its autotuner imports when mlflow is installed, which every training
    worker paid for: the Trainer imports DeepSpeed through accelerate even when a run does not shard with it (about
    0.9 of a worker's 11.9 CPU seconds of imports, benchmarks/results/import_cost.json). rayfit never runs DeepSpeed's
    autotuner, which only reads mlflow to log its trials. Later `import deepspeed` calls reuse this one, and mlflow
    itself imports as usual afterwards (the `report_to: [mlflow]` callback)."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    hide_mlflow = "mlflow" not in sys.modules
    if hide_mlflow:
        sys.modules["mlflow"] = None  # `import mlflow` raises ImportError; the autotuner then sets has_mlflow = False
    try:
        import deepspeed
    finally:
        if hide_mlflow:
            del sys.modules["mlflow"]
    return deepspeed


def deepspeed_config(spec: JobSpec, world_size: int, on_gpu: bool, hidden_size: int | None = None) -> dict[str, Any] | None:
    """The DeepSpeed config for `spec` on `world_size` workers, or None when the spec does not use DeepSpeed."""
    stage = spec.cluster.zero_stage
    if stage == 0:
        return None
    t = spec.train
    half = spec.model.dtype if on_gpu else "float32"  # CPUs train in fp32 (the Trainer disables bf16/fp16 there)
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": on_gpu,
        "contiguous_gradients": True,
        "reduce_bucket_size": REDUCE_BUCKET,
    }
    if spec.cluster.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if stage == 2:
        zero["allgather_bucket_size"] = REDUCE_BUCKET
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": PREFETCH_BUCKET,
                # ZeRO-3 keeps parameters up to this size whole on every worker. The hidden size keeps the norms and
                # biases whole and splits every weight matrix whatever the model's size, a small 4-bit one too
                # (transformers' "auto", 10 x the hidden size, kept a tiny model's 4-bit k/v projections whole).
                "stage3_param_persistence_threshold": hidden_size or PARAM_PERSISTENCE_THRESHOLD,
                # Checkpoints must hold consolidated weights that merge and serve load directly (docs/architecture.md).
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
        if spec.cluster.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * world_size,
        "gradient_clipping": t.max_grad_norm,
        "bf16": {"enabled": half == "bfloat16"},
        "fp16": {"enabled": half == "float16"},
        "zero_optimization": zero,
        # The Trainer's AdamW is used; with offload DeepSpeed would otherwise insist on its own CPU Adam op.
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
