"""Packing tokenized samples into max_seq_len rows, with position ids restarting per sample."""

from __future__ import annotations

from datasets import Dataset

from cluster.data.binpack import pack_lengths


def pack(samples: Dataset, max_seq_len: int) -> Dataset:
    """Rows of at most `max_seq_len` tokens holding whole samples; columns input_ids, labels, position_ids.

    Bins come from cluster.data.binpack (best-fit decreasing as in TRL's `pack_dataset(strategy="bfd")`, plus
    minimum-slack filling, which reaches >= 99% full rows where BFD does not). Position ids restart at 0 for each
    sample: that is what makes padding-free attention (sdpa, eager, flash; with use_cache=False) keep samples
    from attending to each other.
    """
    table = samples.select_columns(["input_ids", "labels"])[:]  # plain lists: item access on a Column is slow
    ids, labels = table["input_ids"], table["labels"]
    lengths = [len(x) for x in ids]
    if any(n > max_seq_len for n in lengths):  # the length policy must have run first; never cut silently here
        raise ValueError(f"samples exceed max_seq_len {max_seq_len}; apply the length policy before packing")
    rows = {"input_ids": [], "labels": [], "position_ids": []}
    # Rows in order of their first sample so the (already shuffled) sample order is roughly kept.
    for b in sorted(pack_lengths(lengths, max_seq_len), key=min):
        b = sorted(b)
        rows["input_ids"].append([t for i in b for t in ids[i]])
        rows["labels"].append([t for i in b for t in labels[i]])
        rows["position_ids"].append([p for i in b for p in range(lengths[i])])
    return Dataset.from_dict(rows)


def efficiency(rows: int, real_tokens: int, max_seq_len: int) -> float:
    """Real tokens over token slots when every row is max_seq_len long (padding and unused bin space are waste)."""
    return real_tokens / (rows * max_seq_len) if rows else 0.0
