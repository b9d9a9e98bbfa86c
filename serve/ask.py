"""Ask a served model one question: `python -m serve.ask MODEL_URI "prompt" [--adapter name=uri ...] [--model NAME]`.

Starts a local Ray and Serve app on 127.0.0.1 (a free port), asks through the official `openai` client, prints the
answer, and shuts everything down. It asks the first adapter given, else the base; --model picks another.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, serve, ask, print, shut down."""
    parser = argparse.ArgumentParser(prog="python -m serve.ask", description=__doc__.splitlines()[0])
    parser.add_argument("model_uri", help="base model or export: folder, s3://..., org/name or embedded:smollm2-135m-instruct")
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=URI", help="a LoRA adapter to serve")
    parser.add_argument("--model", help="which served model to ask (base name or adapter name)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for the local Ray instance")
    opts = parser.parse_args(argv)
    adapters = {}
    for item in opts.adapter:
        name, sep, uri = item.partition("=")
        if not sep or not name or not uri:
            parser.error(f"--adapter {item!r}: expected NAME=URI")
        adapters[name] = uri

    from cluster.errors import run_main

    return run_main(lambda: print(ask(opts.model_uri, opts.prompt, adapters, opts.model, opts.max_tokens,
                                      opts.temperature, opts.num_cpus)))


def ask(model_uri: str, prompt: str, adapters: dict[str, str], model: str | None = None, max_tokens: int = 64,
        temperature: float = 0.0, num_cpus: int = 2) -> str:
    """Serve `model_uri` (+ adapters) locally, ask one chat question, return the answer; always shuts down."""
    import ray
    from openai import OpenAI
    from ray import serve

    from serve.adapters import adapter_dir, resolve_model
    from serve.app import build_app
    from serve.args import parse_args

    args = {"model": model_uri, "adapters": adapters, "num_cpus": 1, "ingress_num_cpus": 0}
    parsed = parse_args(args)  # fail on bad args, a missing model or adapter before starting anything
    resolve_model(model_uri)
    for uri in adapters.values():
        adapter_dir(uri)
    target = model or (next(iter(adapters)) if adapters else parsed.base_name())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see shared/VERIFIED.md: a stray token file breaks local clients
    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="ask", route_prefix="/")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model=target, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, temperature=temperature)
        return reply.choices[0].message.content
    finally:
        serve.shutdown()
        ray.shutdown()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
