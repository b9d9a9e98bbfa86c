"""`serve.app:build_app(args)`: the Serve application for `serve run`, a Serve config YAML and a KubeRay RayService.

    serve run serve.app:build_app model=embedded:smollm2-135m-instruct
    # or in a Serve config: import_path: serve.app:build_app, args: {model: ..., adapters: {name: s3://...}}
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.args import ServeArgs, parse_args


def build_app(args: dict[str, Any]) -> Application:
    """Validate `args` (every problem at once, as a SpecError) and build the OpenAI-compatible application."""
    parsed = parse_args(args)
    if parsed.engine == "vllm":
        from serve.vllm_app import build_vllm_app

        return build_vllm_app(parsed)
    from serve.api import OpenAIIngress
    from serve.engine import Engine

    plain = parsed.model_dump()  # only plain dicts cross the Ray boundary; each replica re-validates
    engine = Engine.options(**engine_options(parsed)).bind(plain)
    return OpenAIIngress.options(**ingress_options(parsed)).bind(engine, plain)


def replica_options(args: ServeArgs) -> dict[str, Any]:
    """num_replicas or autoscaling_config, as Serve's deployment options take them."""
    if args.autoscaling is not None:
        return {"autoscaling_config": args.autoscaling.model_dump()}
    return {"num_replicas": args.num_replicas or 1}


def engine_options(args: ServeArgs) -> dict[str, Any]:
    """Deployment options of the engine: replicas, concurrency, queue bound (beyond it: 503) and resources."""
    return {**replica_options(args), "max_ongoing_requests": args.max_ongoing_requests,
            "max_queued_requests": args.max_queued_requests,
            "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus}}


def ingress_options(args: ServeArgs) -> dict[str, Any]:
    """The ingress only parses and relays. It takes twice what the engines can hold plus their queue: with exactly
    that, overflow would wait unbounded in Serve's proxy; with headroom it reaches the engines' bounded queue and
    gets an OpenAI-shaped 503 at once (the rejected requests leave the ingress immediately)."""
    replicas = args.autoscaling.max_replicas if args.autoscaling else (args.num_replicas or 1)
    capacity = (args.max_ongoing_requests + args.max_queued_requests) * replicas
    return {**replica_options(args), "max_ongoing_requests": 2 * capacity,
            "ray_actor_options": {"num_cpus": args.ingress_num_cpus}}
