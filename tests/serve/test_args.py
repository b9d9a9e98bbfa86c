"""Serve args: unknown keys and broken rules are all reported at once, with the field and the fix."""

from __future__ import annotations

import pytest

from cluster.spec.base import SpecError
from serve.app import deployment_options
from serve.args import parse_args


def test_defaults_and_base_name():
    args = parse_args({"model": "embedded:smollm2-135m-instruct"})
    assert args.base_name() == "smollm2-135m-instruct" and args.vllm.tensor_parallel_size == 1
    assert parse_args({"model": "/runs/faq/export/"}).base_name() == "export"
    assert parse_args({"model": "x", "model_name": "faq"}).base_name() == "faq"


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as e:
        parse_args(
            {"model": "m", "adapter": {}, "max_ongoing_requests": 0, "engine": "transformers", "api_keys": [{"value": "sk-1"}]}
        )
    text = str(e.value)
    assert "4 problems" in text
    for needle in (
        "adapter: unknown key 'adapter'. Fix: did you mean 'adapters'?",
        "max_ongoing_requests",
        "engine: unknown key 'engine'",
        "api_keys.0.value: unknown key 'value'",
    ):
        assert needle in text


def test_rules_across_fields():
    with pytest.raises(SpecError) as e:
        parse_args(
            {
                "model": "m",
                "model_name": "a",
                "adapters": {"a": "/x", "bad name": "/y"},
                "num_replicas": 2,
                "autoscaling": {"min_replicas": 3, "max_replicas": 2},
                "num_gpus": 1,
                "vllm": {"tensor_parallel_size": 2},
                "api_keys": [{}, {"env": "K", "file": "/f"}, {"env": "K", "models": ["zulu"]}],
            }
        )
    text = str(e.value)
    for needle in (
        "adapters.a: adapter 'a' has the base model's name",
        "adapters.bad name",
        "num_replicas and autoscaling",
        "autoscaling.min_replicas",
        "num_gpus is set together with vllm.tensor_parallel_size",
        "api_keys.0: an API key needs exactly one",
        "api_keys.1: an API key",
        "api_keys.2.models: 'zulu' is neither",
    ):
        assert needle in text, needle


def test_deployment_options():
    fixed = parse_args(
        {"model": "m", "num_replicas": 2, "max_ongoing_requests": 32, "max_queued_requests": 8, "vllm": {"cpu_kv_cache_gib": 2}}
    )
    assert deployment_options(fixed) == {
        "num_replicas": 2,
        "max_ongoing_requests": 2 * (32 + 8),
        "health_check_timeout_s": 120,
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 0, "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}},
    }
    scaled = parse_args(
        {
            "model": "m",
            "autoscaling": {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 4},
            "num_gpus": 1,
            "vllm": {"accelerator_type": "A10G"},
        }
    )
    opts = deployment_options(scaled)
    assert opts["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 4}
    assert opts["ray_actor_options"]["num_gpus"] == 1 and opts["ray_actor_options"]["accelerator_type"] == "A10G"
    assert "num_replicas" not in opts
    tp = deployment_options(parse_args({"model": "m", "vllm": {"tensor_parallel_size": 4}}))
    assert tp["placement_group_bundles"] == [{"CPU": 1}] + [{"GPU": 1}] * 4 and tp["ray_actor_options"]["num_gpus"] == 0
