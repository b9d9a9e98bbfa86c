"""What the merge and evaluate steps ask Ray for: CPUs, GPUs, host RAM and GPU memory, from the base's config alone.

Both run as Ray tasks (cluster.steps) with these requests, so they land on a node that can hold them, and the job
refuses before training when no node ever can (cluster.planner.placement).

- Merge runs on CPU. The streaming merge (LoRA and QLoRA, docs/merge-evaluate.md) holds the adapter, a few copies of
  the largest linear weight and one slice being copied; the in-memory merge (full fine-tunes, adapters with
  modules_to_save) holds the whole export, and one shard of it while saving.
- Evaluate's loss task holds one model at a time (base, then tuned) plus one eval row's logits; on a GPU cluster on
  one GPU, after loading through host RAM (from_pretrained reads into CPU memory first). Scoring a checkpoint
  instead of an export (merge disabled) merges it in memory first.
- Evaluate's answers come from vLLM engine replicas (cluster/evaluation/answers.py), each asking Ray for one CPU,
  plus one GPU on GPU clusters (cluster/generation/engine.py). ray.data.llm's bundles carry no memory request, so
  `generate_request`'s host RAM and GPU memory are checked against the nodes before training instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cluster.planner.memory import CONTEXT_RESERVE, GiB
from cluster.planner.params import DTYPE_BYTES, ParamCounts
from cluster.spec.job import JobSpec

# A process with torch, transformers, PEFT and bitsandbytes imported: 0.55 GiB measured (docs/benchmarks.md), rounded up.
PROCESS_BASELINE = 1 * GiB
# A vLLM engine replica's processes besides the weights and KV cache: Ray Data's engine actor, vLLM's engine core and
# its worker. Their peak RSS, each process counted once, less the float32 weights and the 1 GiB KV cache, came to
# 2.75 GiB on CPU with the embedded 135M model (benchmarks/results/generate_throughput.json,
# engine_rss_less_weights_and_kv_gib; an upper figure, as the three peaks need not coincide).
VLLM_BASELINE = int(2.75 * GiB)
# GRPO's rollout engine on CPU is one process (vLLM's engine in the Ray actor, no multiprocessing): its RSS less the
# weights and the 1 GiB KV cache came to 1.43 GiB (benchmarks/results/grpo_rollouts.json), rounded up.
VLLM_ONE_PROCESS_BASELINE = int(1.5 * GiB)
CPU_KV_CACHE = 1 * GiB  # cluster.generation.settings.EngineSettings.cpu_kv_cache_gib's default
SLICE_BYTES = 4 * 2**20  # cluster.merge.stream.SLICE_BYTES, as float32, read and converted
SHARD_BYTES = 5 * 10**9  # merge.max_shard_size's default; save_pretrained builds one shard at a time


@dataclass(frozen=True)
class StepRequest:
    """The resources one step's Ray task asks for, and what its host RAM figure counts."""

    step: str  # "merge", "evaluate" (its loss task) or "generate" (one vLLM engine replica of evaluation)
    num_cpus: float
    num_gpus: float
    host_ram: int  # bytes: Ray's `memory` resource of the task
    gpu_memory: int  # bytes on its one GPU (0 without a GPU)
    how: str  # what the figure stands for, for messages

    def ray_options(self) -> dict:
        """Keyword arguments for `.options()` of a Ray task."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.host_ram}

    def to_json(self) -> dict:
        """A plain dict of the request."""
        return asdict(self)


def streams(spec: JobSpec) -> bool:
    """Whether the merge of this spec's checkpoints streams (cluster.merge.stream.streaming_blocker, by the spec)."""
    return spec.model.method != "full" and not spec.model.lora.modules_to_save


def merge_request(spec: JobSpec, config, counts: ParamCounts) -> StepRequest:
    """Resources of merging a checkpoint of `spec` (already in the dtype it trains in) into an export."""
    width = DTYPE_BYTES[spec.model.dtype]
    export = counts.total * width
    if streams(spec):
        linear = _largest_linear(config) * max(width, 4)
        # the linear weight read, its update B @ A, the sum (and for QLoRA the 4-bit copy and its dequantization)
        held = counts.trainable_bytes + 4 * linear + 2 * SLICE_BYTES
        how = "streaming: adapter + largest linear weights + one slice"
    else:
        held = export + min(SHARD_BYTES, export)
        how = "in memory: the whole export + one shard while saving"
        if spec.model.method == "qlora" and spec.merge.into == "dequantized":
            held += counts.frozen_bytes
    return StepRequest("merge", 1, 0, PROCESS_BASELINE + held, 0, how)


def evaluate_request(spec: JobSpec, config, counts: ParamCounts) -> StepRequest:
    """Resources of the evaluation's loss task: base and tuned scored on every eval row, one model at a time."""
    width = DTYPE_BYTES[spec.model.dtype]
    model = counts.total * width
    working = spec.data.max_seq_len * config.vocab_size * 4 * 2  # one row's logits in float32 and the loss's copy
    merge_first = 0 if spec.merge.enabled else merge_request(spec, config, counts).host_ram - PROCESS_BASELINE
    if spec.cluster.use_gpu:
        return StepRequest(
            "evaluate",
            1,
            1,
            PROCESS_BASELINE + model + merge_first,
            model + working + CONTEXT_RESERVE,
            "loss task: one model loaded through host RAM, scored on one GPU",
        )
    return StepRequest(
        "evaluate", 1, 0, PROCESS_BASELINE + model + working + merge_first, 0, "loss task: one model and one row's logits"
    )


def generate_request(spec: JobSpec, config, counts: ParamCounts) -> StepRequest:
    """Resources of one vLLM engine replica answering the held-out prompts: the weights and, on CPU, its KV cache in
    host RAM; on a GPU, the weights and one longest sequence's KV cache (vLLM takes what is free for more)."""
    width = DTYPE_BYTES[spec.model.dtype]
    model = counts.total * width
    kv_dim = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * (
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    sequence = (spec.data.max_seq_len + spec.evaluate.max_new_tokens) * 2 * config.num_hidden_layers * kv_dim * width
    if spec.cluster.use_gpu:
        how = "one vLLM engine replica: weights loaded through host RAM, weights + a sequence's KV cache on one GPU"
        return StepRequest("generate", 1, 1, VLLM_BASELINE + model, model + sequence + CONTEXT_RESERVE, how)
    return StepRequest("generate", 1, 0, VLLM_BASELINE + model + CPU_KV_CACHE, 0, "one vLLM engine replica: weights + KV cache")


def _largest_linear(config) -> int:
    """Elements of the largest linear weight in a decoder layer (the MLP's, for the architectures rayfit knows)."""
    h = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or 4 * h
    heads = config.num_attention_heads
    q_dim = heads * (getattr(config, "head_dim", None) or h // heads)
    return max(inter * h, q_dim * h)


def gib(n: int) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / GiB:.1f}"
