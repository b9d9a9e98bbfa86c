"""Preparing 100,000 rows: reading and checks on the driver, then render + tokenize locally (datasets.map, the path
before Ray Data) or on Ray Data with 1 and 2 CPUs; SmolLM2's tokenizer and ChatML template.

    PYTHONPATH=. .venv/bin/python benchmarks/data_prepare.py [--rows 100000] [--runs 3]

The rows are the embedded construction FAQ repeated with distinct questions ("... (case k)"). Each configuration
runs `--runs` times, interleaved (A, B, C, D, A, B, ...), and the median is reported, because the machine may be
shared. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_rows(path: str, rows: int) -> None:
    """`rows` alpaca records: the FAQ repeated, each copy's questions made distinct."""
    from cluster.embedded import embedded_data_path

    faq = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8") if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = dict(faq[i % len(faq)])
            r["instruction"] = f"{r['instruction']} (case {i // len(faq)})"
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    """Measure each configuration, print the table."""
    import datasets
    import ray

    from cluster.data import pipeline
    from cluster.data.pipeline import read_all, tokenize
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--near", action="store_true", help="also time the near-duplicate pass (MinHash LSH)")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    tmp = tempfile.mkdtemp(prefix="rayfit-bench-data-")
    path = os.path.join(tmp, "rows.jsonl")
    write_rows(path, args.rows)

    def spec(procs: int, near: bool):
        return validate_spec(
            {
                "model": {"base": "embedded:smollm2-135m-instruct"},
                "data": {
                    "train": [{"path": path}],
                    "max_seq_len": 512,
                    "eval_split": 0.0,
                    "num_proc": procs,
                    "near_duplicates": {} if near else None,
                },
                "train": {"eval_steps": None},
                "evaluate": {"enabled": False},
                "output": {"storage": tmp, "name": "bench"},
            }
        )

    tokenizer = load_tokenizer(spec(1, False))
    t = time.perf_counter()
    loaded = read_all(spec(1, False).data)
    read_s = time.perf_counter() - t
    near_s = None
    if args.near:
        t = time.perf_counter()
        read_all(spec(1, True).data)
        near_s = time.perf_counter() - t - read_s

    def local(procs: int) -> float:
        t = time.perf_counter()
        tokenize(loaded, spec(procs, False).data, tokenizer)
        return time.perf_counter() - t

    def on_ray(cpus: int) -> float:
        """Ray Data at any row count (the job itself uses it from pipeline.ROWS_FOR_RAY samples on)."""
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        rule, pipeline.ROWS_FOR_RAY = pipeline.ROWS_FOR_RAY, 0
        try:
            t = time.perf_counter()
            tokenize(loaded, spec(cpus, False).data, tokenizer)
            return time.perf_counter() - t
        finally:
            pipeline.ROWS_FOR_RAY = rule
            ray.shutdown()

    configs = {
        "datasets.map, 1 process (before)": lambda: local(1),
        "datasets.map, 2 processes (before)": lambda: local(2),
        "Ray Data, 1 CPU": lambda: on_ray(1),
        "Ray Data, 2 CPUs": lambda: on_ray(2),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.runs):
        for name, run in configs.items():
            times[name].append(run())
    n = len(loaded.samples)
    print(
        f"{args.rows} rows; read + checks on the driver {read_s:.1f} s ({n / read_s:,.0f} rows/s)"
        + (f"; near-duplicate pass (MinHash LSH) {near_s:.1f} s ({n / near_s:,.0f} rows/s)" if near_s else "")
        + "\n"
    )
    from benchmarks.results import table, write_results

    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append([name, f"{med:.1f}", f"{n / med:,.0f}", ", ".join(f"{x:.1f}" for x in ts)])
    write_results(
        f"data_prepare-{args.rows}",
        runs=[{"config": name, "seconds": ts} for name, ts in times.items()],
        summary={"rows": args.rows, "read_and_checks_s": read_s, "near_duplicates_s": near_s or None},
        tables={"prepare": table(["render + tokenize", "median s", "rows/s", "runs (s)"], rows)},
    )


if __name__ == "__main__":
    main()
