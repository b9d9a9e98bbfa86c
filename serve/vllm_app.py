"""`engine: vllm`: the same args handed to Ray Serve LLM (`ray.serve.llm`, vLLM) with its LoRA settings.

Ray Serve LLM serves adapters as `model="<base>:<adapter>"` and downloads them from
`{dynamic_lora_loading_path}/{adapter}` in object storage; args.py checks that the adapters fit that layout.
Our API keys and /v1/models filtering are not applied on this path (Ray Serve LLM has its own ingress).
"""

from __future__ import annotations

from typing import Any

from cluster import storage
from cluster.errors import UserError
from cluster.model.source import HUB_ID
from serve.args import ServeArgs


def llm_config_dict(args: ServeArgs) -> dict[str, Any]:
    """Our args as the plain dict `ray.serve.llm.LLMConfig(**...)` takes."""
    from serve.app import replica_options

    model_id = args.base_name()
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": model_id, "model_source": _model_source(args.model)},
        "engine_kwargs": {"tensor_parallel_size": args.vllm.tensor_parallel_size, "dtype": args.dtype,
                          "gpu_memory_utilization": args.vllm.gpu_memory_utilization,
                          "trust_remote_code": args.trust_remote_code, "max_num_seqs": args.max_ongoing_requests,
                          **({"max_model_len": args.vllm.max_model_len or args.max_model_len}
                             if (args.vllm.max_model_len or args.max_model_len) else {})},
        "deployment_config": {**replica_options(args), "max_ongoing_requests": args.max_ongoing_requests,
                              "max_queued_requests": args.max_queued_requests},
    }
    prefix = _lora_prefix(args)
    if prefix is not None:
        config["lora_config"] = {"dynamic_lora_loading_path": prefix, "max_num_adapters_per_replica": args.max_loaded_adapters}
        config["engine_kwargs"] |= {"enable_lora": True, "max_lora_rank": args.vllm.max_lora_rank,
                                    "max_loras": min(args.max_loaded_adapters, args.max_batch_size)}
    if args.vllm.accelerator_type:
        config["accelerator_type"] = args.vllm.accelerator_type
    config["engine_kwargs"] |= args.vllm.engine_kwargs  # the user's explicit vLLM settings win
    return config


def build_vllm_app(args: ServeArgs) -> Any:
    """A Ray Serve LLM OpenAI app for `args`; needs vllm installed where the replicas run (GPU nodes)."""
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as e:
        raise UserError(f"engine: vllm needs Ray Serve LLM with vLLM ({e}). Fix: pip install 'ray[llm]' on GPU nodes, "
                        "or use engine: transformers.") from None
    if args.api_keys:
        raise UserError("api_keys are not applied by engine: vllm (Ray Serve LLM's ingress has no key check). Fix: remove "
                        "api_keys and authenticate at the gateway, or use engine: transformers.")
    return build_openai_app({"llm_configs": [LLMConfig(**llm_config_dict(args))]})


def _model_source(model: str) -> Any:
    if model.startswith("embedded:"):
        from cluster.model.source import resolve_base

        return resolve_base(model)
    if storage.is_remote(model):
        return {"bucket_uri": model}  # Ray Serve LLM mirrors object-store models itself (CloudMirrorConfig)
    if HUB_ID.match(model) and not storage.local_path(model).exists():
        return model
    return str(storage.local_path(model))


def _lora_prefix(args: ServeArgs) -> str | None:
    if args.adapter_root:
        return args.adapter_root.rstrip("/")
    if args.adapters:
        return next(iter(args.adapters.values())).rstrip("/").rsplit("/", 1)[0]
    return None
