"""The planner's parameter, gradient and optimizer-state bytes equal what PyTorch allocates for the tiny model."""

from __future__ import annotations

import pytest
import torch

from cluster.planner import make_plan
from cluster.spec import validate_spec


def tiny_spec(model_dir, **model) -> object:
    return validate_spec(
        {
            "model": {"base": str(model_dir), **model},
            "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 64},
            "cluster": {"num_workers": 1, "gpus_per_worker": 0},
            "output": {"name": "plan-test"},
        }
    )


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def one_step(model) -> tuple[int, int]:
    """Backward and one AdamW step; the bytes of .grad tensors and of the optimizer state."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    ids = torch.randint(0, 100, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = nbytes(p.grad for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    state = nbytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return grads, state


def test_full_fp32_bytes_equal_pytorch(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    plan = make_plan(tiny_spec(tiny_model_dir, method="full", dtype="float32"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = nbytes(model.parameters())
    grads, state = one_step(model)
    assert plan.counts.total == sum(p.numel() for p in model.parameters())
    assert (plan.memory.weights, plan.memory.gradients, plan.memory.optimizer) == (params, grads, state)
    assert plan.memory.lora_params == 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lora_bytes_equal_pytorch(tiny_model_dir, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    spec = tiny_spec(tiny_model_dir, method="lora", dtype=dtype, lora={"r": 8, "alpha": 16, "target_modules": "all-linear"})
    # a half-precision plan is a GPU plan: on CPUs rayfit trains in float32, and so plans in float32
    plan = make_plan(spec, gpu="H100-80GB" if dtype == "bfloat16" else None)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=getattr(torch, dtype))
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    frozen = nbytes(p for p in model.parameters() if not p.requires_grad)
    adapters = nbytes(p for p in model.parameters() if p.requires_grad)
    grads, state = one_step(model)
    assert plan.counts.trainable == model.get_nb_trainable_parameters()[0]
    assert (plan.memory.weights, plan.memory.lora_params) == (frozen, adapters)
    assert (plan.memory.gradients, plan.memory.optimizer) == (grads, state)
    if dtype == "bfloat16":  # PEFT keeps adapters in float32 on a half base; the planner must know
        assert adapters == 4 * plan.counts.trainable


def test_qlora_bytes_equal_what_rayfit_allocates(tiny_model_dir):
    """QLoRA as rayfit loads it (cluster.model.load: 4-bit base, prepare_model_for_kbit_training, PEFT) and as TRL's
    SFTTrainer then casts it (adapters to bfloat16)."""
    from cluster.model.load import load_model

    spec = tiny_spec(tiny_model_dir, method="qlora", dtype="float32", lora={"r": 8, "alpha": 16})
    plan = make_plan(spec)
    model = load_model(spec, on_gpu=False)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)  # what SFTTrainer.__init__ does for quantized models
    frozen = nbytes(p for p in model.parameters() if not p.requires_grad)
    states = {id(p): p.quant_state for p in model.parameters() if getattr(p, "quant_state", None) is not None}
    for state in states.values():
        frozen += nbytes([state.absmax, state.code, state.offset, state.state2.absmax, state.state2.code])
    quantized = len(states)
    adapters = nbytes(p for p in model.parameters() if p.requires_grad)
    grads, state = one_step(model)
    assert quantized == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers; the tied head is not quantized
    assert (plan.memory.weights, plan.memory.lora_params) == (frozen, adapters)
    assert (plan.memory.gradients, plan.memory.optimizer) == (grads, state)
    full = make_plan(tiny_spec(tiny_model_dir, method="full", dtype="float32"))
    assert plan.memory.weights < full.memory.weights / 2
