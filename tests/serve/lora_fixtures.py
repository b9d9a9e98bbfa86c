"""Two LoRA adapters on the tiny model, trained with plain PEFT in seconds to give different answers."""

from __future__ import annotations

import json
from pathlib import Path

QUESTION = "Who are you?"
# Short in the tiny tokenizer's vocabulary (6 and 9 tokens), so a few steps make them the greedy answers.
ANSWERS = {"alpha": "A building permit is required.", "bravo": "The building is safe."}


def serve_base(tiny_model_dir: Path, out: Path, chat_template: str | None = None) -> Path:
    """The tiny model with embeddings scaled up: at the random init (std 0.02) the tied output layer cannot give
    confident logits, and a LoRA on the linear layers alone cannot learn a sharp answer (loss stalls at 3.7).
    `chat_template` replaces the tokenizer's (e.g. one that renders tools)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = chat_template or tokenizer.chat_template
    tokenizer.save_pretrained(out)
    return out


def chat_ids(tokenizer, question: str, answer: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the ChatML prompt for `question`, and of `answer` + end of turn (empty when None)."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] if answer else []
    return prompt_ids, answer_ids


def train_adapter(base_dir: Path, answer: str, out: Path, seed: int, steps: int = 80) -> Path:
    """Train a rank-8 LoRA so the greedy answer to QUESTION is `answer`; save it with PEFT's save_pretrained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear")
    model = get_peft_model(model, config)
    prompt_ids, answer_ids = chat_ids(tokenizer, QUESTION, answer)
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # without it a bad step can stall training (seen at lr 5e-3)
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05, f"adapter for {answer!r} did not converge (loss {loss.item():.3f})"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def as_checkpoint(folder: Path, base_model: str) -> Path:
    """Turn a PEFT folder into a rayfit checkpoint: a manifest with kind=checkpoint and method=lora, written last."""
    from cluster.manifest import write_manifest

    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    write_manifest(
        folder,
        "checkpoint",
        spec={},
        base_model=base_model,
        method="lora",
        dtype="float32",
        step=60,
        metrics={},
        adapter_config=adapter_config,
    )
    return folder
