"""Scores of one model on the held-out set: eval loss and perplexity, and text metrics of its answers (the answers
themselves come from vLLM engines: cluster/evaluation/answers.py)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import torch

from cluster.evaluation.heldout import IGNORE
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
