"""A full fine-tune saved only as DeepSpeed ZeRO-3 shards becomes an ordinary transformers export."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.merge import merge_checkpoint
from tests.cluster.merge.checkpoints import spec_dict, zero3_checkpoint

pytestmark = pytest.mark.slow


def test_zero3_shards_become_a_loadable_export_with_the_trained_logits(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "zero3-run" / "checkpoint_2026-11-23_10-00-00.000000"
    trained = zero3_checkpoint(tiny_model_dir, ckpt, spec_dict(tiny_model_dir, "full", name="zero3-run"))
    assert trained["losses"][-1] < trained["losses"][0]
    assert list(ckpt.glob("global_step*/zero_pp_rank_*")) and not list(ckpt.glob("*.safetensors"))

    export = merge_checkpoint(str(ckpt))
    files = {p.name for p in (tmp_path / "zero3-run" / "export").iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not [f for f in files if f.startswith(("zero_pp_rank", "global_step", "latest"))]
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        got = model(input_ids=trained["input_ids"]).logits
        before = base(input_ids=trained["input_ids"]).logits
    assert (got - trained["logits"]).abs().max().item() <= 1e-4
    assert (before - trained["logits"]).abs().max().item() > 0.1  # training changed the weights
