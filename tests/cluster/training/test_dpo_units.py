"""The objective spec section, the DPO/KTO trainer arguments, and what the planner counts for them."""

from __future__ import annotations

import pytest

from cluster.spec import SpecError, validate_spec


def _spec(**train) -> dict:
    return {
        "model": {"base": "meta-llama/Llama-3.1-8B", "method": "full", "dtype": "bfloat16"},
        "data": {"train": [{"path": "pairs.jsonl"}], "max_seq_len": 2048},
        "train": {"eval_steps": None, **train},
        "cluster": {"num_workers": 8, "gpus_per_worker": 1, "sharding": "deepspeed_zero3"},
        "output": {"storage": "/tmp/unused", "name": "plan"},
    }


def test_objective_rules_are_reported_with_fixes():
    with pytest.raises(SpecError) as e:
        validate_spec(_spec(objective="kto", micro_batch_size=1, dpo={"beta": 0.2}))
    text = str(e.value)
    assert "train.micro_batch_size: KTO estimates its KL term" in text and "set train.micro_batch_size: 2" in text
    assert "train.dpo: dpo settings given but objective is 'kto'" in text
    with pytest.raises(SpecError, match="train.dpo.loss_weights: 1 weights for 2 loss types"):
        validate_spec(_spec(objective="dpo", dpo={"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}))
    with pytest.raises(SpecError, match="train.dpo.loss_type.0"):
        validate_spec(_spec(objective="dpo", dpo={"loss_type": ["sigmoid_typo"]}))
    spec = validate_spec(
        {
            **_spec(objective="sft"),
            "model": {"base": "meta-llama/Llama-3.1-8B", "method": "qlora"},
            "cluster": {"sharding": "deepspeed_zero2"},
        }
    )
    assert validate_spec(spec.model_dump()) == spec  # a full dump (default dpo/kto sections included) validates again


def test_dpo_config_carries_the_spec(tmp_path):
    from cluster.objectives.dpo import dpo_args
    from cluster.objectives.kto import kto_args

    spec = validate_spec(_spec(objective="dpo", dpo={"beta": 0.3, "loss_type": ["ipo"], "reference": "precomputed"}))
    args = dpo_args(spec, tmp_path, None, on_gpu=False, has_eval=False)
    assert (args.beta, args.loss_type, args.max_length, args.precompute_ref_log_probs) == (0.3, ["ipo"], 2048, True)
    lora = validate_spec(
        {
            **_spec(objective="kto", micro_batch_size=2, kto={"undesirable_weight": 1.5}),
            "model": {"base": "meta-llama/Llama-3.1-8B", "method": "lora"},
        }
    )
    kto = kto_args(lora, tmp_path, None, on_gpu=False, has_eval=False)
    assert (kto.undesirable_weight, kto.precompute_ref_log_probs) == (1.5, False)  # LoRA: the disabled adapter


def test_planner_counts_two_sequences_and_the_reference_copy():
    from cluster.planner import make_plan

    def memory(**train):
        return make_plan(validate_spec(_spec(**train)), gpu="H100-80GB").memory

    sft, frozen, pre = memory(), memory(objective="dpo"), memory(objective="dpo", dpo={"reference": "precomputed"})
    # chosen and rejected per pair: every per-token term doubles (2,048 -> 4,096 tokens, within one logits tile); the
    # fp32 gradient of the trained LM head (4 bytes x vocabulary x hidden size, Llama-3.1-8B's) does not
    head_gradient = 4 * 128_256 * 4_096
    assert frozen.activations == pre.activations == 2 * sft.activations - head_gradient
    params = 8_030_261_248  # Llama-3.1-8B
    assert frozen.reference == pytest.approx(params * 2 / 8, rel=0.01)  # bf16 copy, sharded by ZeRO-3 over 8 GPUs
    assert pre.reference == 0 and frozen.total - pre.total >= frozen.reference
    lora = make_plan(
        validate_spec({**_spec(objective="dpo"), "model": {"base": "meta-llama/Llama-3.1-8B"}}), gpu="H100-80GB"
    ).memory
    assert lora.reference == 0  # LoRA's reference is the base with the adapter disabled
