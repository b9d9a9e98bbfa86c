"""`rayfit generate` with several engine settings against each other, on the same prompts: what its CPU defaults
(enforce_eager, max_num_seqs) are chosen from.

    RAY_AUTH_MODE=disabled PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.generate_sweep [--prompts 256]

Each setting of SWEEP runs `rayfit generate` once on one private local Ray, as benchmarks/generate_throughput.py runs
it (the embedded SmolLM2-135M-Instruct in float32, the first --prompts FAQ questions, every answer --max-tokens long).
Writes benchmarks/results/generate_sweep.json (table `sweep`: first block, wall time, output tokens/s end to end),
which docs/generate.md quotes; `--resummarize` recomputes the table from the runs it holds. (The results file now
there was written by this same code when it was `generate_throughput.py --sweep`.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.generate_throughput import after_first_block, questions, rayfit_generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# (max_num_seqs, enforce_eager) tried; Ray Data sends each engine up to 8 batches at once, so the batch size is
# max_num_seqs / 8 to keep that many rows in flight.
SWEEP = ((64, False), (64, True), (128, True), (256, True))


def sweep(prompts: list[str], max_tokens: int) -> list[dict]:
    """One `rayfit generate` run per setting of SWEEP, on one local Ray."""
    import ray

    runs = []
    with tempfile.TemporaryDirectory(prefix="rayfit-bench-generate-") as tmp:
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
        try:
            for seqs, eager in SWEEP:
                label = f"max_num_seqs {seqs}, " + ("eager" if eager else "torch.compile")
                engine = {"max_num_seqs": seqs, "batch_size": max(1, seqs // 8), "enforce_eager": eager}
                run = rayfit_generate(prompts, max_tokens, 1, Path(tmp), label, **engine)
                run["after_first_block_tok_s"] = after_first_block(run, max_tokens)
                runs.append(run)
                print({k: v for k, v in run.items() if k != "blocks"}, flush=True)
        finally:
            ray.shutdown()
    return runs


def sweep_tables(runs: list[dict], prompts: int, max_tokens: int) -> tuple[dict, dict]:
    """The summary and table `sweep`. End to end only: with 128 or 256 rows in flight, most rows are answered in the
    first wave, so the rate after the first block says little."""
    from benchmarks.results import table

    rows = [[r["path"], f"{r['first_block_s']:.1f}", f"{r['seconds']:.1f}", f"{r['tok_s']:.1f}"] for r in runs]
    header = ["engine", "first block s", "wall s", "tok/s end to end"]
    best = max(runs, key=lambda r: r["tok_s"])
    summary = {"prompts": prompts, "max_tokens": max_tokens, "fastest_end_to_end": best["path"]}
    return summary, {"sweep": table(header, rows)}


def main() -> None:
    from benchmarks.results import resummarize, write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--resummarize", action="store_true", help="recompute the results file's table from its runs")
    args = parser.parse_args()
    if args.resummarize:

        def recompute(old: dict) -> tuple[dict, dict]:
            return sweep_tables(old["runs"], old["summary"]["prompts"], old["summary"]["max_tokens"])

        resummarize("generate_sweep", recompute)
        return
    runs = sweep(questions(args.prompts), args.max_tokens)
    summary, tables = sweep_tables(runs, args.prompts, args.max_tokens)
    write_results("generate_sweep", runs=runs, summary=summary, tables=tables)


if __name__ == "__main__":
    main()
