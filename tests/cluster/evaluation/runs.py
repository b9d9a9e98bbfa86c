"""A small real run of the tiny model on the embedded FAQ: data prepared by cluster.data, a LoRA adapter trained on
its train rows, saved as a checkpoint in the run layout of docs/architecture.md."""

from __future__ import annotations

from pathlib import Path

import torch

from cluster.spec import JobSpec
from tests.cluster.merge.checkpoints import lora_config, save_checkpoint


def run_spec(base: Path, storage: Path, name: str = "eval-run", **evaluate) -> dict:
    """A LoRA spec on the embedded FAQ with a 5% eval split, short rows, and short eager-vLLM answers to every
    held-out prompt (enforce_eager: the engine starts in seconds instead of compiling)."""
    return {
        "model": {
            "base": str(base),
            "method": "lora",
            "dtype": "float32",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        },
        "data": {"train": [{"path": "embedded:construction-faq"}], "eval_split": 0.05, "max_seq_len": 256, "num_proc": 1},
        "output": {"storage": str(storage), "name": name},
        "merge": {"enabled": True},
        "evaluate": {"enabled": True, "max_new_tokens": 8, "samples_shown": 2, "enforce_eager": True, **evaluate},
    }


def train_run(base: Path, storage: Path, steps: int = 30, lr: float = 1e-2, **evaluate) -> tuple[dict, Path]:
    """Train a LoRA adapter on the run's packed train rows and save checkpoint_*; returns (spec dict, checkpoint)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer

    spec = run_spec(base, storage, **evaluate)
    job = JobSpec.model_validate(spec)
    tokenizer = load_tokenizer(job)
    rows = prepare_datasets(job, tokenizer, str(storage / job.output.name / "data")).train()
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora_config(spec))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        row = rows[step % len(rows)]
        batch = {k: torch.tensor([row[k]]) for k in ("input_ids", "labels", "position_ids")}
        model(**batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ckpt = storage / job.output.name / f"checkpoint_{steps:08d}"
    save_checkpoint(model, tokenizer, ckpt, spec, step=steps)
    return spec, ckpt
