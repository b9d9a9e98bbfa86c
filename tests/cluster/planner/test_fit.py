"""The fit check refuses what does not fit with the plan's numbers and the smallest change that fits."""

from __future__ import annotations

import sys

import pytest

from cluster.errors import UserError
from cluster.planner import check_fit, make_plan, suggest_changes
from cluster.planner.plan import with_changes

LLAMA_8B, LLAMA_70B = "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"


def test_a_plan_that_fits_passes(spec):
    s = spec(LLAMA_70B, method="qlora", seq=1024)
    plan = make_plan(s, gpu="H100-80GB")
    assert plan.fits
    check_fit(plan, s)


def test_70b_full_on_8_gpus_is_refused_with_numbers_and_the_smallest_fix(spec):
    s = spec(LLAMA_70B, method="full", seq=1024, sharding="deepspeed_zero3", workers=8)
    plan = make_plan(s, gpu="H100-80GB")
    with pytest.raises(UserError) as e:
        check_fit(plan, s)
    msg = str(e.value)
    assert "8 x H100-80GB needs 149.1 GiB per GPU" in msg and "optimizer 98.6" in msg and "has 79.1 GiB" in msg
    # more GPUs come before offload (slow) and before changing the method
    assert (
        "Fix: cluster.num_workers: 17 (76.1 GiB per GPU); or cluster.sharding: deepspeed_zero3 with offload_optimizer: true"
        in msg
    )
    assert "plan.enforce: false" in msg


def test_an_elastic_run_must_fit_on_its_fewest_workers(spec):
    s = spec(LLAMA_70B, method="full", seq=1024, sharding="deepspeed_zero3", workers=24)
    plan = make_plan(with_changes(s, {"cluster": {"min_workers": 8}}), gpu="H100-80GB")
    assert plan.fits  # on all 24
    with pytest.raises(UserError) as e:
        check_fit(plan, plan.spec)
    msg = str(e.value)
    # ZeRO-3 on 8 GPUs (one node left of three) holds three times the share; 17 is the fewest that fit
    assert "cluster.min_workers is 8, but on 8 x H100-80GB" in msg and "needs 149.1 GiB per GPU" in msg
    assert "Fix: cluster.min_workers: 17 (the fewest that fit)" in msg
    check_fit(make_plan(with_changes(s, {"cluster": {"min_workers": 17}}), gpu="H100-80GB"), s)


def test_every_suggestion_fits_when_applied(spec):
    s = spec(LLAMA_70B, method="full", seq=1024, sharding="deepspeed_zero3", workers=8)
    plan = make_plan(s, gpu="H100-80GB")
    changes = suggest_changes(plan)
    assert len(changes) >= 3
    for change in changes:
        assert make_plan(with_changes(s, change.changes), gpu="H100-80GB").fits, change.description


def test_smaller_micro_batch_comes_first_and_keeps_the_batch(spec):
    s = spec(LLAMA_8B, seq=2048, mb=8, workers=1)
    plan = make_plan(s, gpu="L4-24GB")
    assert not plan.fits
    first = suggest_changes(plan)[0]  # the largest micro-batch that fits: 4 does not, 2 does
    assert first.changes == {"train": {"micro_batch_size": 2, "gradient_accumulation_steps": 4}}
    assert first.description == "train.micro_batch_size: 2 with gradient_accumulation_steps: 4 (same batch)"


def test_lora_that_needs_two_changes_gets_the_cheapest_combination(spec):
    s = spec(LLAMA_8B, seq=8192, mb=4, workers=8)
    plan = make_plan(s, gpu="A10G-24GB")
    first = suggest_changes(plan)[0]  # costs 1 + 2; micro-batch 1 with ZeRO-3 also fits, at 1 + 3
    assert first.description == (
        "train.micro_batch_size: 1 with gradient_accumulation_steps: 4 (same batch), train.activation_offloading: true"
    )
    assert make_plan(with_changes(s, first.changes), gpu="A10G-24GB").fits


def test_qlora_on_one_small_gpu_is_told_to_shard_it_with_zero3(spec):
    s = spec(LLAMA_70B, method="qlora", seq=1024)
    with pytest.raises(UserError) as e:
        check_fit(make_plan(s, gpu="L4-24GB"), s)
    assert "Fix: cluster.num_workers: 3 with cluster.sharding: deepspeed_zero3 (21.2 GiB per GPU)" in str(e.value)


def test_70b_qlora_on_8_a10g_is_told_to_shard_the_4bit_base(spec):
    s = spec(LLAMA_70B, method="qlora", seq=4096, workers=8)
    plan = make_plan(s, gpu="A10G")
    with pytest.raises(UserError) as e:
        check_fit(plan, s)
    msg = str(e.value)
    assert "8 x A10G-24GB needs 54.5 GiB per GPU" in msg and "no change rayfit knows of" not in msg
    assert "Fix: cluster.sharding: deepspeed_zero3 (19.0 GiB per GPU); or cluster.sharding: fsdp2 (18.8 GiB)" in msg


def test_at_8192_tokens_it_takes_zero3_and_activation_offload_on_the_same_gpus(spec):
    s = spec(LLAMA_70B, method="qlora", seq=8192, workers=8)
    plan = make_plan(s, gpu="A10G")
    first = suggest_changes(plan)[0]  # before optimizer and parameter offload, and before 16x the GPUs
    assert first.description == "cluster.sharding: deepspeed_zero3, train.activation_offloading: true"
    assert round(first.total / 2**30, 1) == 16.4
    assert make_plan(with_changes(s, first.changes), gpu="A10G").fits


def test_no_change_fits_says_so(spec):
    # 128k tokens in one micro-batch: the head's logits alone (kept on the GPU by every lever) outgrow an L4
    s = spec(LLAMA_70B, method="qlora", seq=131072)
    with pytest.raises(UserError, match="no change rayfit knows of fits this GPU"):
        check_fit(make_plan(s, gpu="L4-24GB"), s)


def test_offload_beyond_the_host_ram_in_the_plan_is_a_named_error(spec):
    s = with_changes(
        spec(LLAMA_70B, method="qlora", seq=8192, workers=8, sharding="deepspeed_zero3", host_ram_per_worker_gib=8),
        {"train": {"activation_offloading": True}},
    )
    plan = make_plan(s, gpu="A10G")
    assert plan.fits  # the GPU side fits; the host does not
    with pytest.raises(UserError) as e:
        check_fit(plan, s)
    msg = str(e.value)
    assert msg.startswith("plan: train.activation_offloading needs 12.2 GiB of host RAM per worker")
    assert "plan.host_ram_per_worker_gib is 8, 4.2 GiB short" in msg and "Fix: turn off train.activation_offloading" in msg


def test_suggestions_stay_within_the_host_ram_in_the_plan(spec):
    s = spec(LLAMA_70B, method="qlora", seq=8192, workers=8, host_ram_per_worker_gib=8)
    changes = suggest_changes(make_plan(s, gpu="A10G"))
    assert changes and not any("activation_offloading" in c.description for c in changes)  # 12.2 GiB of host RAM
    for change in changes:
        check_fit(make_plan(with_changes(s, change.changes), gpu="A10G"), s)  # host RAM included


def test_activation_offloading_on_cpu_is_refused_at_validation(spec):
    from cluster.spec.base import SpecError

    with pytest.raises(SpecError, match=r"train\.activation_offloading: activation offloading moves activations"):
        with_changes(spec(LLAMA_8B), {"cluster": {"gpus_per_worker": 0}, "train": {"activation_offloading": True}})


def test_an_unknown_gpu_is_named_with_the_known_ones(spec):
    with pytest.raises(UserError) as e:
        make_plan(spec(LLAMA_8B), gpu="T4")
    msg = str(e.value)
    assert "unknown GPU 'T4'" in msg
    for name in ("A10G-24GB", "L4-24GB", "L40S-48GB", "A100-40GB", "A100-80GB", "H100-80GB"):
        assert name in msg


def test_enforce_false_lets_it_start(spec):
    s = spec(LLAMA_70B, method="full", workers=8, sharding="deepspeed_zero3", enforce=False)
    plan = make_plan(s, gpu="H100-80GB")
    assert plan.fits is False
    check_fit(plan, s)


def test_headroom_is_kept_free(spec):
    tight = spec(LLAMA_70B, method="full", seq=1024, sharding="deepspeed_zero3", workers=18)
    assert make_plan(tight, gpu="H100-80GB").fits
    assert not make_plan(with_changes(tight, {"plan": {"headroom": 0.1}}), gpu="H100-80GB").fits


def test_cpu_plan_and_unknown_accelerator_are_not_checked(spec):
    s = with_changes(spec(LLAMA_8B), {"cluster": {"gpus_per_worker": 0}})
    cpu = make_plan(s)
    assert cpu.fits is None and cpu.spec.model.dtype == "float32"  # rayfit trains in float32 on CPUs
    check_fit(cpu, s)
    tpu = with_changes(spec(LLAMA_8B), {"cluster": {"accelerator_type": "TPU-V4"}})
    assert make_plan(tpu).fits is None


def test_gpu_type_from_the_connected_ray_cluster(spec, monkeypatch):
    from types import SimpleNamespace

    # What ray.cluster_resources() reports on a cluster of H100 nodes; the planner only reads it, never connects.
    ray = SimpleNamespace(
        is_initialized=lambda: True, cluster_resources=lambda: {"CPU": 128.0, "GPU": 8.0, "accelerator_type:H100": 1.0}
    )
    monkeypatch.setitem(sys.modules, "ray", ray)
    plan = make_plan(spec(LLAMA_70B, method="full", sharding="deepspeed_zero3", workers=8))
    assert plan.gpu.name == "H100-80GB" and plan.fits is False
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: False))
    assert make_plan(spec(LLAMA_70B, method="full", sharding="deepspeed_zero3", workers=8)).gpu is None


def test_gpu_count_override_and_accelerator_type(spec):
    full = spec(LLAMA_70B, method="full", sharding="deepspeed_zero3", seq=1024)
    s = with_changes(full, {"cluster": {"accelerator_type": "H100"}})
    assert make_plan(s, num_gpus=24).gpu.name == "H100-80GB"
    assert make_plan(s, num_gpus=24).fits and not make_plan(s, num_gpus=8).fits
