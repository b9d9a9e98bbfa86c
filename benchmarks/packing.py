"""Packing efficiency and data preparation time on the embedded FAQ with SmolLM2's tokenizer.

    .venv/bin/python benchmarks/packing.py [--runs 3]

Efficiency is real tokens over token slots: rows x max_seq_len for packed rows and for padding to max_seq_len,
and rows x the longest sample of each micro-batch of 8 (shuffled, seed 0) for dynamic padding. Writes
benchmarks/results/packing.json with tables `embedded` and `synthetic` (seeded random lengths at larger scale, no
tokenization), which docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


HEADER = [
    "max_seq_len", "samples", "tokens", "rows (rayfit)", "packed eff.", "rows (TRL bfd)", "TRL bfd eff.",
    "padded to max_seq_len", "dynamic padding, batch 8", "prepare (s, median)", "cached (s, median)",
]  # fmt: skip
SYNTHETIC_HEADER = [
    "samples",
    "lengths",
    "max_seq_len",
    "lower bound",
    "rows (rayfit)",
    "eff.",
    "rows (BFD)",
    "BFD eff.",
    "pack time (s)",
]


def main() -> None:
    """Measure both tables and write the results file."""
    import datasets
    from transformers import AutoTokenizer

    from benchmarks.results import table, write_results
    from cluster.data import prepare_datasets
    from cluster.data.binpack import best_fit_decreasing
    from cluster.embedded import embedded_model_dir
    from cluster.spec import validate_spec

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    runs, embedded = [], []
    for max_len in (512, 1024, 2048):
        spec = validate_spec(
            {
                "model": {"base": "embedded:smollm2-135m-instruct"},
                "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": max_len, "eval_split": 0.0},
                "train": {"eval_steps": None},
                "output": {"storage": "/tmp/unused", "name": "bench"},
            }
        )
        cold, warm = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                prepared = prepare_datasets(spec, tokenizer, cache)
                cold.append(time.perf_counter() - t)
                t = time.perf_counter()
                rows = prepare_datasets(spec, tokenizer, cache).train()
                warm.append(time.perf_counter() - t)
                lengths = [n for pos in rows["position_ids"] for n in _sample_lengths(pos)]
        report = prepared.report
        trl_rows = len(best_fit_decreasing(lengths, max_len))  # what trl.pack_dataset(strategy="bfd") produces
        tokens = sum(lengths)
        order = sorted(lengths)
        random.Random(0).shuffle(order)
        dynamic = tokens / sum(8 * max(order[i : i + 8]) for i in range(0, len(order), 8))
        runs.append({"max_seq_len": max_len, "prepare_s": cold, "cached_s": warm})
        embedded.append(
            [max_len, report.train_samples, tokens, report.train_rows, f"{report.packing_efficiency:.1%}", trl_rows]
            + [f"{tokens / (trl_rows * max_len):.1%}", f"{report.padded_efficiency:.1%}", f"{dynamic:.1%}"]
            + [f"{statistics.median(cold):.2f}", f"{statistics.median(warm):.2f}"]
        )
    synthetic_rows = synthetic()
    write_results(
        "packing",
        runs=runs,
        summary={"runs_per_length": args.runs},
        tables={"embedded": table(HEADER, embedded), "synthetic": table(SYNTHETIC_HEADER, synthetic_rows)},
        notes="prepare/cached seconds depend on the machine's load; token counts, rows and efficiencies are exact",
    )


def synthetic() -> list[list]:
    """Bin packing alone on seeded random lengths: rayfit's rows against TRL-style BFD and the lower bound."""
    from cluster.data.binpack import best_fit_decreasing, pack_lengths

    out = []
    rng = random.Random(0)
    for n, lo, hi, cap in ((9_500, 61, 169, 1024), (50_000, 61, 169, 1024), (50_000, 50, 2000, 8192), (9_500, 61, 169, 4096)):
        lengths = [rng.randint(lo, hi) for _ in range(n)]
        t = time.perf_counter()
        rows = len(pack_lengths(lengths, cap))
        dt = time.perf_counter() - t
        bfd, total = len(best_fit_decreasing(lengths, cap)), sum(lengths)
        out.append([n, f"{lo}-{hi}", cap, -(-total // cap), rows, f"{total / (rows * cap):.2%}", bfd])
        out[-1] += [f"{total / (bfd * cap):.2%}", f"{dt:.2f}"]
    return out


def _sample_lengths(position_ids: list[int]) -> list[int]:
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


if __name__ == "__main__":
    main()
