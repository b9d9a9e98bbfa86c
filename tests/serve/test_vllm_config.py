"""Our args as vLLM's engine arguments, checked by vLLM's own parser and AsyncEngineArgs; LoRA sized from the adapters."""

from __future__ import annotations

import json

import pytest

from cluster.errors import UserError
from serve.args import parse_args
from serve.vllm_config import adapter_ranks, engine_kwargs, lora_sizes, serving_dtype, vllm_namespace


def _adapter(path, rank):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return str(path)


def test_lora_rank_and_slots_come_from_the_adapters(tmp_path):
    args = parse_args(
        {
            "model": "m",
            "adapters": {"a": _adapter(tmp_path / "a", 8), "b": _adapter(tmp_path / "b", 24)},
            "max_loaded_adapters": 3,
        }
    )
    ranks = adapter_ranks(args)
    assert ranks == {"a": 8, "b": 24}
    assert lora_sizes(args, ranks) == {"enable_lora": True, "max_lora_rank": 32, "max_loras": 2, "max_cpu_loras": 3}
    rooted = parse_args({"model": "m", "adapter_root": str(tmp_path / "root")})
    (tmp_path / "root").mkdir()
    _adapter(tmp_path / "root" / "late", 64)
    assert lora_sizes(rooted, adapter_ranks(rooted))["max_lora_rank"] == 64
    assert lora_sizes(parse_args({"model": "m"}), {}) == {}
    with pytest.raises(UserError, match="LoRA rank 1000 is above vLLM's largest"):
        lora_sizes(parse_args({"model": "m", "adapter_root": "/r", "vllm": {"max_lora_rank": 1000}}), {})


def test_namespace_is_what_vllm_parses_and_user_kwargs_win(tmp_path):
    from vllm.engine.arg_utils import AsyncEngineArgs

    args = parse_args(
        {
            "model": "m",
            "model_name": "faq",
            "dtype": "float32",
            "max_model_len": 1024,
            "max_ongoing_requests": 24,
            "default_max_tokens": 100,
            "vllm": {"tool_call_parser": "hermes", "engine_kwargs": {"enable_prefix_caching": False}},
        }
    )
    namespace = vllm_namespace(args, str(tmp_path), {})
    engine = AsyncEngineArgs.from_cli_args(namespace)
    assert (engine.model, engine.served_model_name, engine.dtype, engine.max_model_len) == (
        str(tmp_path),
        ["faq"],
        "float32",
        1024,
    )
    assert engine.max_num_seqs == 24 and engine.enable_prefix_caching is False
    assert engine.override_generation_config == {} and not engine.enable_lora  # no max_new_tokens: it caps every request
    assert not engine.worker_extension_cls  # rayfit's worker methods only with LoRA (serve/vllm_worker.py)
    with_lora = engine_kwargs(parse_args({"model": "m", "storage": str(tmp_path)}), "m", {})
    assert with_lora["enable_lora"] and with_lora["worker_extension_cls"] == "serve.vllm_worker.RayfitWorker"
    assert namespace.enable_auto_tool_choice and namespace.tool_call_parser == "hermes"
    assert (
        engine_kwargs(parse_args({"model": "m", "vllm": {"tensor_parallel_size": 2}}), "m", {})["distributed_executor_backend"]
        == "ray"
    )
    structured = {"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
    namespace = vllm_namespace(parse_args({"model": "m", "vllm": {"engine_kwargs": structured}}), "m", {})
    config = namespace.structured_outputs_config  # vLLM's config class, as `vllm serve --structured-outputs-config` gives
    assert (type(config).__name__, config.backend, config.disable_any_whitespace) == ("StructuredOutputsConfig", "xgrammar", True)
    bogus = parse_args({"model": "m", "vllm": {"engine_kwargs": {"structured_outputs_config": {"bogus": 1}}}})
    with pytest.raises(UserError, match=r"vLLM refused argument --structured-outputs-config: .* StructuredOutputsConfig bogus"):
        vllm_namespace(bogus, "m", {})
    with pytest.raises(UserError, match=r"unknown vLLM engine arguments \['max_num_seq'\]"):
        vllm_namespace(parse_args({"model": "m", "vllm": {"engine_kwargs": {"max_num_seq": 4}}}), "m", {})


def test_auto_dtype_is_float32_on_cpu_and_the_configs_on_gpu(tmp_path):
    import torch
    from vllm.engine.arg_utils import AsyncEngineArgs

    engine = AsyncEngineArgs.from_cli_args(vllm_namespace(parse_args({"model": "m"}), str(tmp_path), {}))
    assert engine.dtype == ("auto" if torch.cuda.is_available() else "float32")  # the default, through vLLM's parser
    assert (serving_dtype("auto", on_gpu=False), serving_dtype("auto", on_gpu=True)) == ("float32", "auto")
    assert serving_dtype("bfloat16", on_gpu=False) == "bfloat16"  # a dtype given is kept
