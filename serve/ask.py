"""Ask a served model one question: `python -m serve.ask MODEL_URI "prompt" [--adapter name=uri ...] [--model NAME]`.

Starts a local Ray and Serve app on 127.0.0.1 (a free port), asks through the official `openai` client, prints the
answer, and shuts everything down. It asks the first adapter given, else the base; --model picks another.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

# Serve's controller gives a new HTTP proxy three readiness checks of 5 s, then kills it and starts another, and
# `serve.start` fails on the killed one ("The actor never ran"). A busy machine can take longer to start a Ray worker.
# The controller reads it at start, so it is set before `ray.init` (docs/platform-notes.md).
PROXY_READY_TIMEOUT = ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, serve, ask, print, shut down."""
    parser = argparse.ArgumentParser(
        prog="python -m serve.ask",
        description=__doc__.splitlines()[0],
        epilog='example:\n  rayfit ask ~/rayfit-runs/demo-cpu/export "What is a bygglov?"   (= python -m serve.ask ...)',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_uri", help="base model or export: folder, s3://..., org/name or embedded:smollm2-135m-instruct")
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=URI", help="a LoRA adapter to serve")
    parser.add_argument("--model", help="which served model to ask (base name or adapter name)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, help="default: the model's generation_config, else 0.3")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for the local Ray instance")
    opts = parser.parse_args(argv)
    adapters = {}
    for item in opts.adapter:
        name, sep, uri = item.partition("=")
        if not sep or not name or not uri:
            parser.error(f"--adapter {item!r}: expected NAME=URI")
        adapters[name] = uri

    from cluster.errors import run_main

    return run_main(
        lambda: print(ask(opts.model_uri, opts.prompt, adapters, opts.model, opts.max_tokens, opts.temperature, opts.num_cpus))
    )


# For a model whose generation_config.json sets no sampling (the embedded SmolLM2 converted from GGUF, and exports
# of it): a low temperature keeps a 135M model on topic, and a mild repetition penalty stops the loops it falls into
# greedily ("The building is not designed for the use of the building." four times over).
SAMPLING = {"temperature": 0.3, "top_p": 0.9, "repetition_penalty": 1.15}


def ask(
    model_uri: str,
    prompt: str,
    adapters: dict[str, str],
    model: str | None = None,
    max_tokens: int = 128,
    temperature: float | None = None,
    num_cpus: int = 2,
) -> str:
    """Serve `model_uri` (+ adapters) locally, ask one chat question, return the answer; always shuts down."""
    import ray
    from openai import OpenAI
    from ray import serve

    from serve.adapters import adapter_dir, resolve_model
    from serve.app import build_app
    from serve.args import parse_args

    # One question: skipping torch.compile saves minutes of startup and costs a second of decoding.
    args = {
        "model": model_uri,
        "adapters": adapters,
        "num_cpus": 1,
        "max_model_len": 2048,
        "max_ongoing_requests": 8,
        "vllm": {"enforce_eager": True},
    }
    parsed = parse_args(args)  # fail on bad args, a missing model or adapter before starting anything
    sampling = sampling_defaults(Path(resolve_model(model_uri))) | (
        {"temperature": temperature} if temperature is not None else {}
    )
    for uri in adapters.values():
        adapter_dir(uri)
    target = model or (next(iter(adapters)) if adapters else parsed.base_name())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see docs/platform-notes.md: a stray token file breaks local clients
    os.environ.setdefault(*PROXY_READY_TIMEOUT)
    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="ask", route_prefix="/")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
        penalty = {"repetition_penalty": sampling.pop("repetition_penalty")} if "repetition_penalty" in sampling else {}
        reply = client.chat.completions.create(
            model=target,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            seed=0,
            extra_body=penalty,
            **sampling,
        )
        return reply.choices[0].message.content
    finally:
        serve.shutdown()
        ray.shutdown()


def sampling_defaults(model_dir: Path) -> dict:
    """SAMPLING for the fields the model's own generation_config.json leaves unset (the server applies the rest)."""
    config_file = model_dir / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {k: v for k, v in SAMPLING.items() if k not in config}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
