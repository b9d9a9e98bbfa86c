"""Decoding a batch of sequences step by step, each with its own LoRA adapter, sampling settings and stop strings.

A plain function over a model and a tokenizer, without Ray, so tests and benchmarks can call it directly. One
forward pass per step serves every row: PEFT routes each row through its own adapter (`adapter_names=`,
"__base__" for none). Finished rows leave the batch (their KV cache rows are dropped), so late rows do not pay for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Job:
    """One sequence to generate: token ids of the prompt and how to sample its completion."""

    prompt_ids: list[int]
    max_tokens: int
    adapter: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class _Row:
    job: Job
    generator: torch.Generator
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    sampled: int = 0  # tokens generated, the end-of-sequence token included (usage counts it)
    done: bool = False


def decode_steps(current_model: Callable[[], tuple[Any, bool]], tokenizer: Any, jobs: list[Job],
                 eos_ids: set[int]) -> Iterator[list[dict | None]]:
    """Yield, once per step, one event per job: {"text", "finish_reason", "completion_tokens"}, or None once it finished.

    `current_model()` gives (model, mixed) at each step: mixed means a PeftModel, which gets `adapter_names` (one
    per row). It is asked every step because the server may wrap its base in a PeftModel while a batch runs.
    """
    rows = [_Row(job, _generator(job.seed)) for job in jobs]
    device = next(current_model()[0].parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids))
    width = max(len(j.prompt_ids) for j in jobs)
    # Left padding keeps every row's newest token in the last column, so one step appends one column for all.
    input_ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs], device=device)
    mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    live = list(range(len(rows)))  # row index of each batch position
    cache = None
    with torch.inference_mode():
        while True:
            model, mixed = current_model()
            extra = {"adapter_names": [rows[i].job.adapter or BASE for i in live]} if mixed else {}
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, **extra)
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            events: list[dict | None] = [None] * len(rows)
            next_ids = []
            for pos, i in enumerate(live):
                token = _sample(logits[pos], rows[i].job, rows[i].generator)
                events[i] = _advance(rows[i], token, tokenizer, eos_ids)
                next_ids.append(token)
            yield events
            keep = [pos for pos, i in enumerate(live) if not rows[i].done]
            if not keep:
                return
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                next_ids = [next_ids[p] for p in keep]
                live = [live[p] for p in keep]
            input_ids = torch.tensor(next_ids, device=device)[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = positions[:, -1:] + 1


def _generator(seed: int | None) -> torch.Generator:
    # Each row has its own generator, so a seeded request samples the same tokens whatever else shares its batch.
    return torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)


def _sample(logits: torch.Tensor, job: Job, generator: torch.Generator) -> int:
    if job.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float().cpu() / job.temperature, dim=-1)
    if job.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > job.top_p  # keep the smallest set reaching top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def _advance(row: _Row, token: int, tokenizer: Any, eos_ids: set[int]) -> dict:
    """Add a token to a row; return the text that is now safe to send and whether the row finished."""
    finish = None
    row.sampled += 1
    if token in eos_ids:
        finish = "stop"
    else:
        row.ids.append(token)
    text = tokenizer.decode(row.ids, skip_special_tokens=True)
    end = len(text)
    for stop in row.job.stop:
        at = text.find(stop, max(0, row.emitted - len(stop)))
        if at != -1 and at < end:
            end, finish = at, "stop"
    if finish is None and len(row.ids) >= row.job.max_tokens:
        finish = "length"
    if finish is None:
        end = _safe_end(text, row.job.stop)
    delta = text[row.emitted:end] if end > row.emitted else ""
    row.emitted = max(row.emitted, end)
    row.done = finish is not None
    return {"text": delta, "finish_reason": finish, "completion_tokens": row.sampled}


def _safe_end(text: str, stops: list[str]) -> int:
    """How much of unfinished text can be sent: not a half-decoded character, nor what may begin a stop string."""
    end = len(text.rstrip("\ufffd"))
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[end - k:end] == stop[:k]:
                hold = max(hold, k)
                break
    return end - hold
