"""Turning tokenized rows into batches: packed rows become one padding-free row, unpacked rows are padded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

IGNORE = -100


def make_collator(pad_token_id: int) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """A collator for rows of `input_ids`, `labels` and (packed) `position_ids` from cluster.data."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "position_ids" in rows[0]:
            return collate_packed(rows)
        return collate_padded(rows, pad_token_id)

    return collate


def collate_packed(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Concatenate packed rows into one (1, N) row; position ids restarting at 0 mark where each sample begins.

    With no attention mask, transformers derives a block-diagonal mask from the position ids, so no sample attends
    to another. The first token of every sample gets no label, so no sample is trained to predict the next one.
    """
    ids = torch.tensor([t for r in rows for t in r["input_ids"]], dtype=torch.long)
    labels = torch.tensor([t for r in rows for t in r["labels"]], dtype=torch.long)
    pos = torch.tensor([p for r in rows for p in r["position_ids"]], dtype=torch.long)
    labels[pos == 0] = IGNORE
    return {"input_ids": ids[None], "labels": labels[None], "position_ids": pos[None]}


def collate_padded(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest; padding is masked out of attention and loss."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in a batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
