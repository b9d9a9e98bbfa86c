"""Train a model a few steps under DeepSpeed ZeRO-3 (world size 1, gloo) and save only DeepSpeed shards.

Run as a script in its own process so the test's interpreter never holds a process group:
    python tests/cluster/merge/zero3_checkpoint.py MODEL_DIR CHECKPOINT_DIR LOGITS_FILE
Writes CHECKPOINT_DIR/global_step*/zero_pp_rank_* (no consolidated weights) and the trained model's logits.
"""

from __future__ import annotations

import os
import sys

import torch


def main(model_dir: str, ckpt_dir: str, logits_file: str) -> None:
    import deepspeed
    from transformers import AutoModelForCausalLM

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"
    )
    deepspeed.init_distributed(dist_backend="gloo")
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False},
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }
    torch.manual_seed(0)
    # Loaded whole, then partitioned by deepspeed.initialize (zero.Init trips over torch 2.13's Parameter.__new__).
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    ids = torch.randint(0, model.config.vocab_size, (1, 24))
    losses = []
    for _ in range(4):
        loss = engine(input_ids=ids, labels=ids, use_cache=False).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    engine.save_checkpoint(ckpt_dir)
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=ids, use_cache=False).logits
    torch.save({"input_ids": ids, "logits": logits, "losses": losses}, logits_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
