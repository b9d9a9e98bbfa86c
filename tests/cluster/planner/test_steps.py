"""The planner's merge and evaluate entries, and the placement check that refuses a job no node can finish."""

from __future__ import annotations

import pytest

from cluster.errors import UserError
from cluster.planner import check_placement, format_plan, make_plan
from cluster.planner.memory import GiB
from cluster.planner.plan import with_changes

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
HEAD = {"Alive": True, "Resources": {"CPU": 0.0, "memory": 32 * GiB}}  # the shipped KubeRay head: num-cpus 0
GPU_WORKER = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0, "memory": 64 * GiB, "accelerator_type:H100": 1.0}}


def _plan(spec, **sections):
    return make_plan(with_changes(spec(LLAMA_70B, method="qlora", seq=1024), sections), gpu="H100-80GB")


def test_the_streaming_merge_of_a_70b_qlora_needs_a_few_gib_and_the_in_memory_one_the_whole_model(spec):
    streaming = _plan(spec, merge={"enabled": True}).merge
    in_memory = _plan(spec, merge={"enabled": True}, model={"lora": {"r": 16, "alpha": 16, "modules_to_save": ["lm_head"]}}).merge
    assert streaming.how.startswith("streaming") and in_memory.how.startswith("in memory")
    assert 1 * GiB < streaming.host_ram < 8 * GiB  # interpreter + adapter + 4 x the 28672 x 8192 MLP weight
    assert in_memory.host_ram > 140e9  # 70.6B parameters in bfloat16, plus the 4-bit base it dequantizes
    assert streaming.ray_options() == {"num_cpus": 1, "num_gpus": 0, "memory": streaming.host_ram}
    plan = _plan(spec)
    assert plan.merge is None and plan.evaluate is None and plan.to_json()["merge"] is None


def test_evaluate_on_a_gpu_cluster_asks_for_one_gpu_with_the_model(spec):
    request = _plan(spec, evaluate={"enabled": True}, cluster={"gpus_per_worker": 1}).evaluate
    assert request.num_gpus == 1 and request.gpu_memory > 141e9  # the bf16 model alone: no single GPU holds it
    small = make_plan(
        with_changes(
            spec("meta-llama/Llama-3.1-8B-Instruct"), {"evaluate": {"enabled": True}, "cluster": {"gpus_per_worker": 1}}
        ),
        gpu="H100-80GB",
    )
    assert 16e9 < small.evaluate.gpu_memory < 30 * GiB  # 8B in bfloat16, a row's logits, the CUDA context
    check_placement(small, [HEAD, GPU_WORKER])


def test_a_node_that_holds_the_merge_passes(spec):
    check_placement(_plan(spec, merge={"enabled": True}), [HEAD, GPU_WORKER])


def test_no_node_holds_the_in_memory_merge_refused_with_the_numbers(spec):
    plan = _plan(spec, merge={"enabled": True}, model={"lora": {"r": 16, "alpha": 16, "modules_to_save": ["lm_head"]}})
    with pytest.raises(UserError) as e:
        check_placement(plan, [HEAD, GPU_WORKER])
    msg = str(e.value)
    assert f"the merge task needs 1 CPU, {plan.merge.host_ram / GiB:.1f} GiB host RAM (in memory" in msg
    assert "the largest node with 1 CPU has 64.0 GiB of Ray memory (2 alive nodes)" in msg
    assert "Fix: add a node" in msg and "plan.enforce: false" in msg
    check_placement(_plan(spec, merge={"enabled": True}, plan={"enforce": False}), [HEAD])  # told to start anyway


def test_a_head_without_cpus_cannot_run_any_task(spec):
    with pytest.raises(UserError, match=r"the merge task needs 1 CPU, .* but no node has 1 CPU \(1 alive node\)"):
        check_placement(_plan(spec, merge={"enabled": True}), [HEAD, {**GPU_WORKER, "Alive": False}])


def test_evaluate_needs_a_gpu_with_the_memory(spec):
    with pytest.raises(UserError, match=r"the evaluate task needs 1 CPU, .* 1 GPU with 1\d\d\.\d GiB"):
        check_placement(_plan(spec, evaluate={"enabled": True}, cluster={"gpus_per_worker": 1}), [HEAD, GPU_WORKER])


def test_evaluation_engines_are_planned_and_placed_like_the_tasks(spec):
    """Evaluation's answers come from vLLM engine replicas: one CPU (and one GPU on GPU clusters) each, the weights and
    one longest sequence's KV cache on the GPU; no engine when max_samples is 0 (eval loss only)."""
    small = with_changes(
        spec("meta-llama/Llama-3.1-8B-Instruct"), {"evaluate": {"enabled": True}, "cluster": {"gpus_per_worker": 1}}
    )
    engine = make_plan(small, gpu="H100-80GB").generate
    assert (engine.step, engine.num_cpus, engine.num_gpus) == ("generate", 1, 1)
    assert 16e9 < engine.gpu_memory < 20 * GiB and engine.host_ram > 16e9  # 8B in bf16 + KV of 2048 + 128 tokens
    check_placement(make_plan(small, gpu="H100-80GB"), [HEAD, GPU_WORKER])
    cpu_worker = {"Alive": True, "Resources": {"CPU": 16.0, "memory": 64 * GiB}}
    with pytest.raises(
        UserError, match=r"an evaluation engine replica needs 1 CPU, .* 1 GPU with .* set evaluate.max_samples: 0"
    ):
        check_placement(make_plan(small, gpu="H100-80GB"), [HEAD, cpu_worker])
    assert make_plan(with_changes(small, {"evaluate": {"max_samples": 0}}), gpu="H100-80GB").generate is None
    assert "eval engine" in format_plan(make_plan(small, gpu="H100-80GB"))
