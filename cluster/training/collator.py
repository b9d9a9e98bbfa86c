"""Turning tokenized rows into batches: packed rows become one padding-free row, unpacked rows are padded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

IGNORE = -100


def make_collator(tokenizer) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """A collator for rows of `input_ids`, `labels` and (packed) `position_ids` from cluster.data.

    Unpacked rows are right-padded by transformers' DataCollatorForSeq2Seq (labels padded with -100). Packed rows
    are not flattened by DataCollatorWithFlattening: it renumbers positions per row, which would erase the
    per-sample restarts inside an already packed row.
    """
    from transformers import DataCollatorForSeq2Seq

    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE, return_tensors="pt")

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_packed(rows) if "position_ids" in rows[0] else dict(pad(rows))

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
