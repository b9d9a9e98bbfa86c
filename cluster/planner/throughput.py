"""Tokens per second from FLOPs per token at an assumed utilisation, and the wall time and cost that follow."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cluster.planner.gpus import Gpu
from cluster.planner.params import DTYPE_BYTES, ParamCounts
from cluster.spec.job import JobSpec

# Share of the data-sheet memory bandwidth a decode step achieves (weights streamed once per token, small batches).
DECODE_BANDWIDTH_USE = 0.5


@dataclass(frozen=True)
class Throughput:
    """Speed and price of a run; None where an input (GPU, token count, price) is unknown."""

    flops_per_token: float  # hardware FLOPs per trained token, recomputation included
    tokens_per_step: int
    tokens_per_s: float | None  # across all GPUs, while training (GRPO's sampling time is apart)
    step_time_s: float | None  # one optimizer step, GRPO's sampling included
    train_tokens: int | None
    wall_time_s: float | None
    cost: float | None
    sampling_s: float | None = None  # GRPO: decoding max_completion_length tokens per step (memory-bandwidth bound)

    def to_json(self) -> dict:
        """Plain dict."""
        return asdict(self)


def flops_per_token(spec: JobSpec, config, counts: ParamCounts) -> float:
    """6N for a full fine-tune, 4N with frozen weights (no weight gradients), plus attention and recomputation."""
    n = counts.total
    layers, seq = config.num_hidden_layers, spec.data.max_seq_len
    heads = config.num_attention_heads
    q_dim = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    attention_forward = 2 * layers * seq * q_dim  # QK^T and AV over a causal context of seq/2 on average
    forward = 2 * n + attention_forward
    # backward: input gradients always (2N), weight gradients only when the weights train (2N more)
    backward = (4 * n if spec.model.method == "full" else 2 * n + 6 * counts.trainable) + 2 * attention_forward
    recompute = forward if spec.train.gradient_checkpointing else 0
    return float(forward + backward + recompute)


def throughput(
    spec: JobSpec,
    config,
    counts: ParamCounts,
    gpu: Gpu | None,
    mfu: float,
    dataset_tokens: int | None,
    price_per_gpu_hour: float | None,
) -> Throughput:
    """Estimated speed, wall time and cost of `spec` on `gpu` (cluster.num_workers of them)."""
    from cluster.objectives import recipe_for

    terms = recipe_for(spec).plan_terms(spec, config, counts)
    t, world = spec.train, spec.cluster.num_workers
    per_token = flops_per_token(spec, config, counts)
    tokens_per_step = t.micro_batch_size * terms.sequence_tokens * t.gradient_accumulation_steps * world
    if t.max_steps is not None:
        train_tokens = t.max_steps * tokens_per_step  # packed rows are full, so every slot is a token
    elif dataset_tokens is not None:
        train_tokens = int(dataset_tokens * t.epochs)
    else:
        train_tokens = None
    if gpu is None:
        return Throughput(per_token, tokens_per_step, None, None, train_tokens, None, None)
    peak = gpu.bf16_flops if spec.model.dtype != "float32" else gpu.bf16_flops / 2  # TF32 runs at half the bf16 rate
    tokens_per_s = mfu * peak * world / per_token
    sampling = sampling_seconds(spec, counts, gpu, terms.decode_steps) if terms.decode_steps else None
    step = tokens_per_step / tokens_per_s + (sampling or 0.0)
    wall = train_tokens / tokens_per_step * step if train_tokens is not None else None
    cost = wall / 3600 * world * price_per_gpu_hour if wall is not None and price_per_gpu_hour is not None else None
    return Throughput(per_token, tokens_per_step, tokens_per_s, step, train_tokens, wall, cost, sampling)


def sampling_seconds(spec: JobSpec, counts: ParamCounts, gpu: Gpu, decode_steps: int) -> float:
    """Time to decode `decode_steps` tokens one after another: each reads every weight once from GPU memory at
    DECODE_BANDWIDTH_USE of the data-sheet bandwidth (GRPO's in-worker sampling gathers ZeRO-3 shards first; the
    vLLM engine splits its weights over train.grpo.rollout_gpus)."""
    m = spec.model
    weights = counts.total * DTYPE_BYTES[m.quantization.compute_dtype if m.method == "qlora" else m.dtype]
    if spec.train.grpo.rollout == "vllm":
        weights //= spec.train.grpo.rollout_gpus
    return decode_steps * weights / (DECODE_BANDWIDTH_USE * gpu.memory_bandwidth)
