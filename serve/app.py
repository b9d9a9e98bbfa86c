"""`serve.app:build_app(args)`: the Serve application for `serve run`, a Serve config YAML and a KubeRay RayService.

serve run serve.app:build_app model=embedded:smollm2-135m-instruct
# or in a Serve config: import_path: serve.app:build_app, args: {model: ..., adapters: {name: s3://...}}
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.args import ServeArgs, parse_args


def build_app(args: dict[str, Any]) -> Application:
    """Validate `args` (every problem at once, as a SpecError) and build the OpenAI-compatible vLLM application."""
    from serve.server import OpenAIServer

    parsed = parse_args(args)
    plain = parsed.model_dump()  # only plain dicts cross the Ray boundary; each replica re-validates
    return OpenAIServer.options(**deployment_options(parsed)).bind(plain)


def replica_options(args: ServeArgs) -> dict[str, Any]:
    """num_replicas or autoscaling_config, as Serve's deployment options take them."""
    if args.autoscaling is not None:
        return {"autoscaling_config": args.autoscaling.model_dump()}
    return {"num_replicas": args.num_replicas or 1}


def deployment_options(args: ServeArgs) -> dict[str, Any]:
    """Replicas, resources and concurrency of the server deployment.

    The replica itself bounds its queue (max_ongoing_requests + max_queued_requests, beyond it an OpenAI-shaped 429
    with Retry-After), so Serve lets twice that through: a rejected request leaves the replica at once, and Serve's
    own overflow answer (a plain-text 503) is never reached in practice.
    """
    capacity = args.max_ongoing_requests + args.max_queued_requests
    tp = args.vllm.tensor_parallel_size
    actor: dict[str, Any] = {
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus if tp == 1 else 0,
        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": f"{args.vllm.cpu_kv_cache_gib:g}"}},
    }
    if args.vllm.accelerator_type:
        actor["accelerator_type"] = args.vllm.accelerator_type
    options: dict[str, Any] = {
        **replica_options(args),
        "max_ongoing_requests": 2 * capacity,
        "ray_actor_options": actor,
        "health_check_timeout_s": 120,
    }
    if tp > 1:  # vLLM's Ray executor places its tensor-parallel workers in the replica's placement group
        options["placement_group_bundles"] = [{"CPU": args.num_cpus}] + [{"GPU": 1}] * tp
        options["placement_group_strategy"] = "STRICT_PACK"
    return options
