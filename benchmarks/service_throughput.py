"""Inference throughput of rayfit's app with the fine-tuning API on (`storage` set) vs off, same model, same workload.

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python -m benchmarks.service_throughput [--rounds 2]

The workload is serve_throughput's (`run_load`: `--clients` threads of the official `openai` client, streamed
one-turn chats, greedy, fixed max_tokens, fp32), against the base model only: what the API costs the traffic that
does not use it. Rounds alternate off / on in one local Ray, so machine noise hits all cases alike. With `storage`,
the app also runs its reconcile loop and vLLM's LoRA support is on (so published adapters can be answered), which is
the cost being measured. A third case, "on, vLLM's LoRA wrappers in every step", is the app with `storage` whose
engine keeps vLLM's CPU LoRA wrappers in every step (`vllm.engine_kwargs: {worker_extension_cls: ""}`: rayfit's
bypass of them in steps without adapters, serve/vllm_worker.py, is off). Goal: on >= 0.97x off.
Results: benchmarks/results/service_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks.results import median, table, write_results
from benchmarks.serve_throughput import ENV, run_load


def cases(storage: Path) -> list[tuple[str, dict]]:
    """(name, args added to the app's) of each case, in the order each round runs them."""
    plain_lora = {"vllm": {"enforce_eager": True, "engine_kwargs": {"worker_extension_cls": ""}}}
    every_step = ("on, vLLM's LoRA wrappers in every step", {"storage": str(storage), **plain_lora})
    return [("off", {}), ("on", {"storage": str(storage)}), every_step]


def main() -> None:
    """Alternate off/on rounds; write medians and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=2048)
    opts = parser.parse_args()

    import ray
    from ray import serve

    from cluster.embedded import embedded_model_dir
    from serve.app import build_app
    from serve.ask import free_port

    model = embedded_model_dir()
    storage = Path(tempfile.mkdtemp(prefix="rayfit-svc-bench-"))
    os.environ.update(ENV)
    args = {
        "model": str(model),
        "model_name": "base",
        "dtype": "float32",
        "max_model_len": opts.max_model_len,
        "max_ongoing_requests": 64,
        "num_cpus": 0,
        "vllm": {"enforce_eager": True},
    }
    runs: list[dict] = []
    loads: list[float] = []
    port = free_port()
    ray.init(num_cpus=3, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}/v1"
        for round_ in range(opts.rounds):
            for case, extra in cases(storage):
                serve.run(build_app({**args, **extra}), name="bench", route_prefix="/")
                run_load(url, ["base"] * opts.clients, opts.clients, 8)  # warm-up
                run = {"case": case, "round": round_, **run_load(url, ["base"] * opts.requests, opts.clients, opts.max_tokens)}
                runs.append({**run, "load": os.getloadavg()[0]})
                loads.append(runs[-1]["load"])
                print(json.dumps(runs[-1]), flush=True)
                serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()

    names = [c for c, _ in cases(storage)]
    med = {
        c: {k: median([r[k] for r in runs if r["case"] == c]) for k in ("tokens_per_s", "requests_per_s", "p50_s")} for c in names
    }
    ratio = med["on"]["tokens_per_s"] / med["off"]["tokens_per_s"]
    plain = med[names[2]]["tokens_per_s"] / med["off"]["tokens_per_s"]
    rows = [
        [f"fine-tuning API {c}", f"{m['requests_per_s']:.2f}", f"{m['tokens_per_s']:.1f}", f"{m['p50_s']:.2f}",
         ", ".join(str(r["tokens_per_s"]) for r in runs if r["case"] == c)]
        for c, m in med.items()
    ]  # fmt: skip
    rows.append(["on / off (output tok/s)", "", f"{ratio:.2f}x", "", ""])
    rows.append([f"{names[2]} / off (output tok/s)", "", f"{plain:.2f}x", "", ""])
    header = [f"app ({opts.clients} clients x {opts.requests} requests, {opts.max_tokens} tokens, greedy, fp32, eager)",
              "req/s", "output tok/s", "p50 s", "runs (tok/s)"]  # fmt: skip
    print(f"\non / off (output tok/s): {ratio:.2f}")
    write_results(
        "service_throughput",
        runs=runs,
        summary={
            "on_over_off": round(ratio, 3),
            "on_vllm_lora_ops_over_off": round(plain, 3),
            **{f"{c}_tokens_per_s": m["tokens_per_s"] for c, m in med.items()},
        },
        tables={"service_throughput": table(header, rows)},
        notes=f"2-core machine shared with other work (1-minute load average {min(loads):.1f} to {max(loads):.1f} "
        "during the measurements); rounds alternate the cases in one Ray.",
    )


if __name__ == "__main__":
    main()
