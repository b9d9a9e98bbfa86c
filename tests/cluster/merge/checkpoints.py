"""Checkpoints in the layout of docs/architecture.md, trained a few steps here so merge tests need no trainer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from cluster.manifest import write_manifest

HERE = Path(__file__).resolve().parent


def spec_dict(base: Path, method: str, name: str = "merge-test", **model) -> dict:
    """A valid job spec for the tiny model; `model` overrides model-section fields."""
    model_section = {"base": str(base), "method": method, "dtype": "float32", **model}
    if method != "full":
        model_section.setdefault("lora", {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"})
    return {
        "model": model_section,
        "data": {"train": [{"path": "embedded:construction-faq"}]},
        "output": {"storage": str(base.parent), "name": name},
    }


def sample_ids(vocab_size: int, seed: int = 1, length: int = 32) -> torch.Tensor:
    """Token ids for training steps and logit comparisons."""
    return torch.randint(3, vocab_size, (2, length), generator=torch.Generator().manual_seed(seed))


def train_adapter(model, steps: int = 6, lr: float = 2e-2, ids: torch.Tensor | None = None) -> list[float]:
    """A few AdamW steps on fixed ids, so the adapter is far from its zero init; returns the losses."""
    ids = (sample_ids(model.config.vocab_size) if ids is None else ids).to(model.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def lora_config(spec: dict):
    """The PEFT LoraConfig the spec's lora section describes."""
    from peft import LoraConfig

    lora = spec["model"]["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )


def save_checkpoint(model, tokenizer, folder: Path, spec: dict, step: int, extra: dict | None = None) -> Path:
    """save_pretrained + tokenizer + manifest.json written last, as the training job does."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    adapter = getattr(model, "peft_config", {}).get("default")
    write_manifest(
        folder,
        "checkpoint",
        spec=spec,
        base_model=spec["model"]["base"],
        method=spec["model"]["method"],
        dtype=spec["model"]["dtype"],
        step=step,
        metrics={"train_loss": 1.0},
        adapter_config=adapter.to_dict() if adapter is not None else None,
        **(extra or {}),
    )
    return folder


def zero3_checkpoint(model_dir: Path, folder: Path, spec: dict) -> dict:
    """A full fine-tune under ZeRO-3 (own process, world size 1 on gloo) saved as DeepSpeed shards only.

    Returns the trained model's input ids, logits and losses.
    """
    logits_file = folder.parent / "zero3-logits.pt"
    with socket.socket() as s:  # a free port for the one-rank process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, str(HERE / "zero3_checkpoint.py"), str(model_dir), str(folder), str(logits_file)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MASTER_PORT": str(port)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    write_manifest(
        folder,
        "checkpoint",
        spec=spec,
        base_model=spec["model"]["base"],
        method="full",
        dtype=spec["model"]["dtype"],
        step=4,
        metrics={},
    )
    return torch.load(logits_file)
