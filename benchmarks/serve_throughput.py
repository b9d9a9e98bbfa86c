"""Serving throughput: rayfit's Serve app (vLLM inside) vs bare `vllm serve` of the same model, and multi-LoRA traffic.

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python -m benchmarks.serve_throughput [--model DIR] [--rounds 2]

One engine is alive at a time; rounds alternate rayfit / bare vLLM (/ Ray Serve LLM with --ray-llm), so machine noise
hits both alike. Each round starts the engine, warms it up, and measures the workload once: `--clients` threads
(official `openai` client, streaming, so time to first token is seen) send `--requests` one-turn chats, greedy,
`max_tokens` fixed, float32. rayfit's rounds also measure mixed traffic over 8 random rank-8 LoRA adapters
against base-only traffic on the same engine. Prints one JSON line per measurement and Markdown tables of medians.
Default model: the demo export (~/rayfit-runs/demo-cpu/export), else the embedded SmolLM2-135M-Instruct (same shape).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEMO_EXPORT = Path("~/rayfit-runs/demo-cpu/export").expanduser()
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
QUESTIONS = [
    "What is a building permit?",
    "How long does a permit take?",
    "Who inspects a new building?",
    "What documents does a renovation need?",
    "Can I build a terrace without a permit?",
    "What is a certificate of occupancy?",
    "How much does a permit cost?",
    "Who signs the project?",
]


def make_adapters(base: Path, out: Path, count: int) -> dict[str, str]:
    """`count` random (non-zero) rank-8 LoRA adapters on every linear layer of `base`, saved with PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
        with torch.no_grad():  # random B as well as A, scaled small, so each adapter changes the answer a little
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.mul_(0.1)
        peft_model.save_pretrained(out / f"lora-{i}")
        adapters[f"lora-{i}"] = str(out / f"lora-{i}")
    return adapters


def run_load(url: str, models: list[str], clients: int, max_tokens: int) -> dict:
    """One streamed chat per entry of `models` from `clients` threads: req/s, output tok/s, latency and TTFT."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=os.environ.get("BENCH_KEY", "none"), max_retries=0, timeout=900)

    def one(i_model: tuple[int, str]) -> tuple[float, float, int]:
        i, model = i_model
        start = time.perf_counter()
        first, tokens = None, 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return time.perf_counter() - start, first or 0.0, tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, enumerate(models)))
    wall = time.perf_counter() - start
    latency = sorted(d[0] for d in done)
    return {
        "requests_per_s": round(len(models) / wall, 3),
        "tokens_per_s": round(sum(d[2] for d in done) / wall, 1),
        "p50_s": round(statistics.median(latency), 3),
        "p95_s": round(latency[int(0.95 * (len(latency) - 1))], 3),
        "ttft_p50_s": round(statistics.median(d[1] for d in done), 3),
        "wall_s": round(wall, 1),
    }


def wait_ready(url: str, timeout: float = 900) -> None:
    """Poll GET /v1/models until it answers 200."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(
                f"{url}/models", headers={"Authorization": f"Bearer {os.environ.get('BENCH_KEY', 'none')}"}
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def bare_vllm(model: Path, port: int, max_len: int, eager: bool, adapters: dict[str, str] | None = None) -> subprocess.Popen:
    """`vllm serve` of the model: vLLM's own OpenAI server in a subprocess (the module, since the `vllm` console
    script fails for the vllm-cpu distribution), with the adapters as LoRA modules when given."""
    lora = (
        [
            "--enable-lora",
            "--max-loras",
            str(len(adapters)),
            "--max-lora-rank",
            "8",
            "--lora-modules",
            *(f"{name}={path}" for name, path in adapters.items()),
        ]
        if adapters
        else []
    )
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        "base",
        "--dtype",
        "float32",
        "--max-model-len",
        str(max_len),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-uvicorn-access-log",
        "--max-num-seqs",
        "64",
        *(["--enforce-eager"] if eager else []),
        *lora,
    ]
    return subprocess.Popen(cmd, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(url: str, label: str, workloads: dict[str, list[str]], opts, results: dict) -> None:
    """Warm up on each workload, then measure each once, appending to results[label + workload]."""
    for models in workloads.values():
        run_load(url, models[: opts.clients], opts.clients, 8)  # warm-up: compiles shapes, loads adapters
    for name, models in workloads.items():
        run = run_load(url, models, opts.clients, opts.max_tokens)
        results.setdefault(f"{label}{name}", []).append(run)
        print(json.dumps({"case": f"{label}{name}", **run, "load": os.getloadavg()[0]}), flush=True)


def main() -> None:
    """Alternate rounds of each server on one machine; print medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model folder; default: the demo export, else the embedded SmolLM2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--ray-llm", action="store_true", help="also measure Ray Serve LLM (ray.serve.llm), first round")
    parser.add_argument(
        "--bare-lora",
        action="store_true",
        help="also measure bare `vllm serve` with the 8 adapters (mixed vs base only), each round",
    )
    parser.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also measure rayfit (base only) in a Ray started with these variables set, e.g. "
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 (one more case per round)",
    )
    parser.add_argument(
        "--enforce-eager",
        action="store_true",
        help="every server skips torch.compile (starts in a minute instead of several on a busy box)",
    )
    opts = parser.parse_args()

    import ray
    from ray import serve

    from serve.app import build_app
    from serve.ask import free_port

    if opts.model:
        model = Path(opts.model)
    elif DEMO_EXPORT.is_dir():
        model = DEMO_EXPORT
    else:
        from cluster.embedded import embedded_model_dir

        model = embedded_model_dir()
    print(f"model {model}", flush=True)
    adapters = make_adapters(model, Path(tempfile.mkdtemp(prefix="rayfit-bench-")), 8)
    base_only = ["base"] * opts.requests
    mixed = [f"lora-{i % 8}" for i in range(opts.requests)]
    results: dict[str, list[dict]] = {}
    os.environ.update(ENV)
    for round_ in range(opts.rounds):
        port = free_port()
        ray.init(num_cpus=3, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            args = {
                "model": str(model),
                "model_name": "base",
                "dtype": "float32",
                "max_model_len": opts.max_model_len,
                "max_ongoing_requests": 64,
                "num_cpus": 0,
                "vllm": {"enforce_eager": opts.enforce_eager},
            }
            serve.run(build_app(args), name="bench", route_prefix="/")
            measure(f"http://127.0.0.1:{port}/v1", "rayfit", {"": base_only}, opts, results)
            serve.delete("bench")
            serve.run(build_app({**args, "adapters": adapters}), name="bench", route_prefix="/")
            measure(
                f"http://127.0.0.1:{port}/v1",
                "rayfit+LoRA",
                {", base only": base_only, ", 8 adapters mixed": mixed},
                opts,
                results,
            )
            serve.delete("bench")
            if opts.ray_llm and round_ == 0:
                try:
                    serve.run(ray_llm_app(model, opts.max_model_len, opts.enforce_eager), name="bench", route_prefix="/")
                    measure(f"http://127.0.0.1:{port}/v1", "Ray Serve LLM", {"": base_only}, opts, results)
                except Exception as e:  # noqa: BLE001 - report and go on with the other servers
                    print(json.dumps({"case": "Ray Serve LLM", "failed": f"{type(e).__name__}: {e}"[:2000]}), flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
        if opts.variant_env:
            variant = dict(item.split("=", 1) for item in opts.variant_env)
            saved = {k: os.environ.get(k) for k in variant}
            os.environ.update(variant)  # before ray.init: Serve's processes inherit them
            port = free_port()
            ray.init(num_cpus=3, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False)
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                serve.run(build_app(args), name="bench", route_prefix="/")
                measure(f"http://127.0.0.1:{port}/v1", f"rayfit, {' '.join(opts.variant_env)}", {"": base_only}, opts, results)
            finally:
                serve.shutdown()
                ray.shutdown()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        port = free_port()
        server = bare_vllm(model, port, opts.max_model_len, opts.enforce_eager)
        try:
            wait_ready(f"http://127.0.0.1:{port}/v1")
            measure(f"http://127.0.0.1:{port}/v1", "bare vllm serve", {"": base_only}, opts, results)
        finally:
            server.terminate()
            server.wait(60)
        if opts.bare_lora:
            port = free_port()
            server = bare_vllm(model, port, opts.max_model_len, opts.enforce_eager, adapters)
            try:
                wait_ready(f"http://127.0.0.1:{port}/v1")
                measure(
                    f"http://127.0.0.1:{port}/v1",
                    "bare vllm serve+LoRA",
                    {", base only": base_only, ", 8 adapters mixed": mixed},
                    opts,
                    results,
                )
            finally:
                server.terminate()
                server.wait(60)
    report(results, opts)


def ray_llm_app(model: Path, max_len: int, eager: bool):
    """The same model through Ray Serve LLM's build_openai_app (settings from docs/platform-notes.md)."""
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(
        model_loading_config={"model_id": "base", "model_source": str(model)},
        engine_kwargs={"dtype": "float32", "max_model_len": max_len, "max_num_seqs": 64, "enforce_eager": eager},
        placement_group_config={"bundles": [{"CPU": 1}]},
        runtime_env={"env_vars": ENV},
        deployment_config={"max_ongoing_requests": 128},
    )
    return build_openai_app({"llm_configs": [config]})


def report(results: dict[str, list[dict]], opts) -> None:
    """Medians per case, and the ratios the issue asks for."""
    keys = ["requests_per_s", "tokens_per_s", "p50_s", "p95_s", "ttft_p50_s"]
    med = {case: {k: statistics.median(r[k] for r in runs) for k in keys} for case, runs in results.items()}
    from benchmarks.results import table, write_results

    header = [f"case ({opts.clients} clients x {opts.requests} requests, max_tokens {opts.max_tokens}, greedy, fp32)"]
    header += ["req/s", "output tok/s", "p50 s", "p95 s", "TTFT p50 s", "runs (tok/s)"]
    rows = [
        [case, f"{m['requests_per_s']:.2f}", f"{m['tokens_per_s']:.1f}", f"{m['p50_s']:.2f}", f"{m['p95_s']:.2f}"]
        + [f"{m['ttft_p50_s']:.3f}", ", ".join(str(r["tokens_per_s"]) for r in results[case])]
        for case, m in med.items()
    ]
    write_results(
        "serve_throughput",
        runs=[{"case": case, **run} for case, runs in results.items() for run in runs],
        summary=med,
        tables={"serve": table(header, rows)},
    )
    if "rayfit" in med and "bare vllm serve" in med:
        ratio = med["rayfit"]["tokens_per_s"] / med["bare vllm serve"]["tokens_per_s"]
        print(f"\nrayfit / bare vllm serve (output tok/s): {ratio:.2f}")
    for case in med:
        if case.startswith("rayfit, ") and "bare vllm serve" in med:
            print(
                f"{case} / bare vllm serve (output tok/s): "
                f"{med[case]['tokens_per_s'] / med['bare vllm serve']['tokens_per_s']:.2f}"
            )
    if "bare vllm serve+LoRA, 8 adapters mixed" in med:
        ratio = (
            med["bare vllm serve+LoRA, 8 adapters mixed"]["tokens_per_s"] / med["bare vllm serve+LoRA, base only"]["tokens_per_s"]
        )
        print(f"bare vllm serve, 8 adapters mixed / base only (output tok/s): {ratio:.2f}")
    if "rayfit+LoRA, 8 adapters mixed" in med:
        ratio = med["rayfit+LoRA, 8 adapters mixed"]["tokens_per_s"] / med["rayfit+LoRA, base only"]["tokens_per_s"]
        print(f"8 adapters mixed / base only (output tok/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
