"""Predicted vs measured peak GPU memory (torch.cuda.max_memory_allocated) for LoRA and QLoRA on a small Llama.

Needs a CUDA GPU (skipped elsewhere). Not yet run: no GPU was lent when it was written (see docs/planner.md).
"""

from __future__ import annotations

import pytest
import torch

from cluster.planner import make_plan
from cluster.spec import validate_spec

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    """A ~300M-parameter Llama with random weights, saved like a hub model (bnb needs real files to quantize)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("small-llama")
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return out


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_peak_memory_within_10_percent(small_llama, method):
    from cluster.model.load import load_model

    spec = validate_spec(
        {
            "model": {"base": str(small_llama), "method": method, "dtype": "bfloat16"},
            "data": {"train": [{"path": "train.jsonl"}], "max_seq_len": 1024},
            "train": {"micro_batch_size": 2, "gradient_checkpointing": True},
            "cluster": {"num_workers": 1, "gpus_per_worker": 1},
            "output": {"name": "gpu-memory"},
        }
    )
    predicted = make_plan(spec, gpu="H100-80GB").memory.allocated
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = load_model(spec, on_gpu=True, device_index=torch.cuda.current_device())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "lora":
        model.to(torch.cuda.current_device())  # QLoRA was placed by device_map; .to is refused on 4-bit models
    else:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)  # as SFTTrainer does for quantized models
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 32000, (2, 1024), device="cuda")
    for step in range(2):  # the second step has optimizer states in memory, as every later one does
        if step == 1:
            torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated()
    print(
        f"{method}: predicted {predicted / 2**30:.2f} GiB, measured {measured / 2**30:.2f} GiB, ratio {predicted / measured:.3f}"
    )
    assert abs(predicted - measured) <= 0.10 * measured
