"""DPO with LoRA: the reference is the base with the adapter disabled, never a second model or a copied adapter."""

from __future__ import annotations

import gc

import pytest
import torch

from cluster.objectives import recipe
from cluster.spec import validate_spec
from tests.cluster.training.conftest import tiny_spec
from tests.cluster.training.preference_data import prepared, write_pairs


@pytest.fixture(scope="module")
def dpo_trainer(tiny_model_dir, tmp_path_factory):
    from cluster.data import load_prepared
    from cluster.model.load import load_tokenizer

    tmp = tmp_path_factory.mktemp("dpo-ref")
    spec_dict = tiny_spec(
        tiny_model_dir,
        tmp,
        "dpo-ref",
        data={"train": [{"path": str(write_pairs(tmp / "p.jsonl", 24))}], "eval_split": 0.0},
        train={"objective": "dpo", "max_steps": 3, "eval_steps": None, "save_steps": 100, "learning_rate": 5e-3},
        cluster={"num_workers": 1},
    )
    spec = validate_spec(spec_dict)
    train_path, _ = prepared(spec_dict, tmp / "data")
    trainer = recipe("dpo").trainer(
        spec, load_tokenizer(spec), None, False, 0, tmp / "hf", load_prepared(train_path), None, eval_on_start=False, callbacks=[]
    )
    return trainer


def test_no_second_model_and_no_adapter_copy(dpo_trainer, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = dpo_trainer.model
    assert isinstance(model, PeftModel)
    assert dpo_trainer.ref_model is None
    assert set(model.peft_config) == {"default"}  # TRL adds a "ref" adapter copy only for a pre-trained adapter
    gc.collect()
    llamas = [o for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)]
    assert len(llamas) == 1, f"{len(llamas)} Llama models in memory"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters()) + lora


def test_reference_log_probs_are_the_base_models(dpo_trainer, tiny_model_dir):
    """After training moved the adapter, TRL's reference log-probs still equal the untouched base model's."""
    from transformers import AutoModelForCausalLM

    dpo_trainer.train()
    batch = dpo_trainer.data_collator([dpo_trainer.train_dataset[i] for i in range(2)])
    model = dpo_trainer.model.eval()
    ref_chosen, ref_rejected = dpo_trainer.compute_ref_log_probs(model, batch)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        target = labels[:, 1:]
        logps = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        per_seq = (logps * (target != -100)).sum(-1)
        policy = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        policy_seq = (torch.log_softmax(policy, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0] * (target != -100)).sum(-1)
    expected_chosen, expected_rejected = per_seq.chunk(2)
    torch.testing.assert_close(ref_chosen, expected_chosen, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ref_rejected, expected_rejected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(policy_seq, per_seq, atol=1e-3), "the adapter did not move; the test would prove nothing"
