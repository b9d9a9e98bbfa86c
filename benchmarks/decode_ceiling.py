"""How many tokens/s this machine's cores can decode at most with the embedded model: the arithmetic ceiling that
bounds `rayfit generate` and transformers' `generate` alike on a CPU.

    PYTHONPATH=. .venv/bin/python -m benchmarks.decode_ceiling [--runs 5] [--batch 64]

Decoding one token of a batch multiplies its hidden state by every weight matrix once: 2 FLOPs per weight (the
embedding lookup is free; a tied head is one more vocab x hidden matrix). The script times float32 matrix products of
the model's own shapes (read from its config: q/k/v/o, gate/up/down and the head) at --batch rows, with torch's
threads as the engines use them (all cores), and divides: tokens/s = FLOP/s measured / FLOPs per token. Attention
over the cache, norms, sampling and the engine's own work come on top, so no engine can reach this figure; it is an
upper bound. Median of --runs. Writes benchmarks/results/decode_ceiling.json (table `ceiling`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from benchmarks.results import table, write_results


def matrices(config: dict) -> list[tuple[int, int]]:
    """(in, out) of every weight matrix one decoded token goes through, the head included."""
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or hidden // heads
    layer = [(hidden, heads * head_dim), (hidden, kv_heads * head_dim), (hidden, kv_heads * head_dim)]
    layer += [(heads * head_dim, hidden), (hidden, inter), (hidden, inter), (inter, hidden)]
    return layer * layers + [(hidden, config["vocab_size"])]


def flops_per_second(shapes: list[tuple[int, int]], batch: int) -> tuple[float, float]:
    """(FLOP/s, seconds) of one pass of `batch` rows through every matrix, after a warm-up pass."""
    weights = {shape: torch.randn(*shape) for shape in set(shapes)}
    inputs = {n: torch.randn(batch, n) for n in {s[0] for s in shapes}}
    for shape in weights:
        inputs[shape[0]] @ weights[shape]
    started = time.perf_counter()
    for shape in shapes:
        inputs[shape[0]] @ weights[shape]
    seconds = time.perf_counter() - started
    return sum(2 * batch * n * m for n, m in shapes) / seconds, seconds


def main() -> None:
    from cluster.embedded import embedded_model_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="rows decoded together (the engine's batch)")
    args = parser.parse_args()
    config = json.loads((embedded_model_dir() / "config.json").read_text())
    shapes = matrices(config)
    per_token = sum(2 * n * m for n, m in shapes)
    runs = []
    for batch in sorted({8, args.batch}):
        for attempt in range(args.runs):
            flops, seconds = flops_per_second(shapes, batch)
            runs.append({"batch": batch, "attempt": attempt, "flop_s": flops, "seconds": seconds})
    rows, summary = [], {"flops_per_token": per_token, "threads": torch.get_num_threads()}
    for batch in sorted({8, args.batch}):
        flops = statistics.median(r["flop_s"] for r in runs if r["batch"] == batch)
        summary[f"batch_{batch}"] = {"flop_s": flops, "tokens_per_s": flops / per_token}
        rows.append([batch, f"{flops / 1e9:.1f}", f"{flops / per_token:.0f}"])
    write_results(
        "decode_ceiling",
        runs=runs,
        summary=summary,
        tables={"ceiling": table(["rows per step", "float32 GFLOP/s (model's matrices)", "ceiling tokens/s"], rows)},
    )


if __name__ == "__main__":
    main()
