"""Scores of one model on the held-out set: eval loss and perplexity, greedy generations, and text metrics."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import torch

from cluster.evaluation.heldout import IGNORE, Sample
from cluster.spec import EvaluateSpec

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


@torch.no_grad()
def eval_loss(model, rows) -> dict:
    """Token-weighted mean cross-entropy over the trained tokens of every eval row, and its perplexity.

    Packed rows go in one at a time with their position_ids and use_cache=False, the only way samples in a row
    never attend to each other (docs/platform-notes.md).
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row["input_ids"]], device=device)
        labels = torch.tensor([row["labels"]], device=device)
        extra = {"position_ids": torch.tensor([row["position_ids"]], device=device)} if row.get("position_ids") else {}
        logits = model(input_ids=ids, use_cache=False, **extra).logits.float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        total += nll.item()
        count += int((target != IGNORE).sum())
    loss = total / max(count, 1)
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "eval_tokens": count}


@torch.no_grad()
def generate(model, tokenizer, samples: list[Sample], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers to each sample's prompt, batched with left padding."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for i in range(0, len(samples), batch_size):
        batch = [s.prompt_ids for s in samples[i : i + batch_size]]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=_stop_ids(model, tokenizer),
        )
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out.tolist()]
    return answers


def _stop_ids(model, tokenizer) -> list[int]:
    """End-of-turn ids: the generation config's, plus the tokenizer's eos (the chat template's end of turn)."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return sorted({*ids, tokenizer.eos_token_id} - {None})


@cache
def _metric(name: str):
    import evaluate

    # Local metric modules: evaluate.load("rouge") would fetch a script from a hub (docs/platform-notes.md).
    return evaluate.load(str(METRICS_DIR / f"{name}.py"))


def normalize(text: str) -> str:
    """Lower case with whitespace collapsed, for exact match."""
    return " ".join(text.lower().split())


def compliant(answer: str, cfg: EvaluateSpec) -> bool:
    """Whether an answer fully matches the spec's format regex and satisfies its JSON schema (each when given).

    The rules are the regex and json_schema graders' own (cluster/graders/), so rewards and compliance agree.
    """
    from cluster.graders.json_schema import conforms
    from cluster.graders.regex import full_match

    if cfg.format_regex is not None and not full_match(cfg.format_regex, answer):
        return False
    return cfg.json_schema is None or conforms(answer, cfg.json_schema)


def text_metrics(answers: list[str], references: list[str], cfg: EvaluateSpec) -> dict:
    """ROUGE-L and BLEU (through `evaluate`), exact match and format compliance of answers against references."""
    if not answers:
        return {"rouge_l": None, "bleu": None, "exact_match": None, "format_compliance": None}
    out = {
        "rouge_l": _metric("rouge_l").compute(predictions=answers, references=references)["rougeL"],
        "bleu": _metric("bleu").compute(predictions=answers, references=references)["bleu"],
        "exact_match": sum(normalize(a) == normalize(r) for a, r in zip(answers, references, strict=False)) / len(answers),
    }
    has_format = cfg.format_regex is not None or cfg.json_schema is not None
    out["format_compliance"] = sum(compliant(a, cfg) for a in answers) / len(answers) if has_format else None
    return out
