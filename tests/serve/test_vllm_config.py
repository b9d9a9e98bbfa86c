"""engine: vllm: our args become a Ray Serve LLM LLMConfig that Ray itself validates (vLLM is not installed here)."""

from __future__ import annotations

import pytest

from cluster.errors import UserError
from serve.args import parse_args
from serve.vllm_app import build_vllm_app, llm_config_dict


def _ray_llm_config(config: dict):
    # ray.serve.llm imports vLLM at import time; its LLMConfig model itself does not need it.
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    return LLMConfig(**config)


def test_lora_settings_translate_to_llm_config():
    args = parse_args({"model": "s3://bkt/runs/faq/export", "model_name": "faq", "engine": "vllm",
                       "adapters": {"tenant-a": "s3://bkt/lora/tenant-a", "tenant-b": "s3://bkt/lora/tenant-b"},
                       "autoscaling": {"min_replicas": 1, "max_replicas": 3}, "max_ongoing_requests": 48,
                       "max_loaded_adapters": 6, "max_batch_size": 4,
                       "vllm": {"max_lora_rank": 32, "tensor_parallel_size": 2, "accelerator_type": "A10G",
                                "engine_kwargs": {"enforce_eager": True}}})
    config = _ray_llm_config(llm_config_dict(args))
    assert config.model_loading_config.model_id == "faq"
    assert config.model_loading_config.model_source.bucket_uri == "s3://bkt/runs/faq/export"
    assert config.lora_config.dynamic_lora_loading_path == "s3://bkt/lora"
    assert config.lora_config.max_num_adapters_per_replica == 6
    assert config.engine_kwargs == {"tensor_parallel_size": 2, "dtype": "auto", "gpu_memory_utilization": 0.9,
                                    "trust_remote_code": False, "max_num_seqs": 48, "enable_lora": True,
                                    "max_lora_rank": 32, "max_loras": 4, "enforce_eager": True}
    assert config.deployment_config["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8}
    assert config.deployment_config["max_ongoing_requests"] == 48
    assert config.accelerator_type == "A10G"


def test_hub_base_without_adapters_and_adapter_root(tmp_path):
    plain = _ray_llm_config(llm_config_dict(parse_args({"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "engine": "vllm"})))
    assert plain.model_loading_config.model_source == "HuggingFaceTB/SmolLM2-135M-Instruct" and plain.lora_config is None
    rooted = llm_config_dict(parse_args({"model": str(tmp_path), "engine": "vllm", "adapter_root": "gs://b/adapters/"}))
    assert rooted["model_loading_config"]["model_source"] == str(tmp_path)
    assert _ray_llm_config(rooted).lora_config.dynamic_lora_loading_path == "gs://b/adapters"


def test_build_without_vllm_says_what_to_install():
    pytest.importorskip("ray")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed; the GPU test covers the real build")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"engine: vllm needs Ray Serve LLM with vLLM.*pip install 'ray\[llm\]'"):
        build_vllm_app(parse_args({"model": "org/name", "engine": "vllm"}))
