"""Serving throughput: batching vs one at a time, and mixed 8-adapter traffic vs base-only, at 16 concurrent clients.

    RAY_AUTH_MODE=disabled .venv/bin/python -m benchmarks.serve_throughput [--model DIR] [--repeats 3] [--requests 64]

Without --model it builds the 2-layer tiny Llama of the tests (tests/tiny_model.py) and 8 random LoRA adapters
(rank 8, every linear layer). Prints one JSON line per run and a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def make_adapters(base: Path, out: Path, count: int) -> dict[str, str]:
    """`count` random (non-zero) LoRA adapters for `base`, saved with PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(model, config).save_pretrained(out / f"lora-{i}")
        adapters[f"lora-{i}"] = str(out / f"lora-{i}")
    return adapters


def run_load(url: str, models: list[str], clients: int, max_tokens: int) -> dict:
    """Send one chat request per entry of `models` from `clients` threads; requests/s and completion tokens/s."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

    def one(model: str) -> int:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me about permits."}],
                                               max_tokens=max_tokens, temperature=1.0, seed=1)
        return reply.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = list(pool.map(one, models))
    wall = time.perf_counter() - start
    return {"requests": len(models), "wall_s": round(wall, 2), "requests_per_s": round(len(models) / wall, 2),
            "tokens_per_s": round(sum(tokens) / wall, 1)}


def main() -> None:
    """Deploy each configuration in turn on one local Ray and measure it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model folder; default: the tests' tiny Llama")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs reserved by the engine replica")
    opts = parser.parse_args()

    import ray
    from ray import serve

    from serve.app import build_app
    from serve.ask import free_port

    work = Path(tempfile.mkdtemp(prefix="rayfit-bench-"))
    if opts.model:
        base = Path(opts.model)
    else:
        from tests.tiny_model import build_tiny_model

        base = build_tiny_model(work / "tiny")
    adapters = make_adapters(base, work, 8)
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1"
    names = list(adapters)
    cases = {
        "one at a time, base": ({"max_batch_size": 1, "max_concurrent_batches": 1}, ["base"] * opts.requests),
        "batched (16), base": ({"max_batch_size": 16}, ["base"] * opts.requests),
        "batched (16), 1 adapter": ({"max_batch_size": 16}, [names[0]] * opts.requests),
        "batched (16), 8 adapters mixed": ({"max_batch_size": 16}, [names[i % 8] for i in range(opts.requests)]),
    }
    results = {}
    try:
        for label, (extra, models) in cases.items():
            args = {"model": str(base), "model_name": "base", "adapters": adapters, "num_cpus": opts.num_cpus,
                    "ingress_num_cpus": 0,
                    "max_ongoing_requests": 64, "batch_wait_timeout_s": 0.05, **extra}
            serve.run(build_app(args), name="bench", route_prefix="/")
            run_load(url, models[:16], opts.clients, opts.max_tokens)  # warm-up: loads adapters, fills caches
            runs = []
            for _ in range(opts.repeats):
                runs.append(run_load(url, models, opts.clients, opts.max_tokens))
                print(json.dumps({"case": label, **runs[-1]}), flush=True)
            results[label] = {k: statistics.median(r[k] for r in runs) for k in ("requests_per_s", "tokens_per_s")}
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\n| case ({opts.clients} clients, {opts.requests} requests, max_tokens {opts.max_tokens}) | requests/s | tokens/s |")
    print("|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} |")


if __name__ == "__main__":
    main()
