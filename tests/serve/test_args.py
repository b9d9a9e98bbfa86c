"""Serve args: unknown keys and broken rules are all reported at once, with the field and the fix."""

from __future__ import annotations

import pytest

from cluster.spec.base import SpecError
from serve.app import engine_options, ingress_options
from serve.args import parse_args


def test_defaults_and_base_name():
    args = parse_args({"model": "embedded:smollm2-135m-instruct"})
    assert args.base_name() == "smollm2-135m-instruct" and args.engine == "transformers"
    assert parse_args({"model": "/runs/faq/export/"}).base_name() == "export"
    assert parse_args({"model": "x", "model_name": "faq"}).base_name() == "faq"


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as e:
        parse_args({"model": "m", "adapter": {}, "max_batch_size": 0, "engine": "tgi", "api_keys": [{"value": "sk-1"}]})
    text = str(e.value)
    assert "4 problems" in text
    for needle in ("adapter: unknown key 'adapter'. Fix: did you mean 'adapters'?", "max_batch_size", "engine",
                   "api_keys.0.value: unknown key 'value'"):
        assert needle in text


def test_rules_across_fields():
    with pytest.raises(SpecError) as e:
        parse_args({"model": "m", "model_name": "a", "adapters": {"a": "/x", "bad name": "/y"}, "num_replicas": 2,
                    "autoscaling": {"min_replicas": 3, "max_replicas": 2}, "max_ongoing_requests": 4,
                    "api_keys": [{}, {"env": "K", "file": "/f"}, {"env": "K", "models": ["zulu"]}]})
    text = str(e.value)
    for needle in ("adapters.a: adapter 'a' has the base model's name", "adapters.bad name", "num_replicas and autoscaling",
                   "autoscaling.min_replicas", "max_ongoing_requests (4) is below", "api_keys.0: an API key needs exactly one",
                   "api_keys.1: an API key", "api_keys.2.models: 'zulu' is neither"):
        assert needle in text, needle


def test_vllm_rules_need_object_store_adapters_under_one_prefix():
    with pytest.raises(SpecError) as e:
        parse_args({"model": "m", "engine": "vllm", "adapters": {"a": "/local/a", "b": "s3://bkt/x/other", "c": "s3://bkt/y/c"}})
    text = str(e.value)
    assert "adapters.a: engine vllm loads adapters only from object storage" in text
    assert "adapters.b: engine vllm finds an adapter at <prefix>/<name>" in text
    assert "reads every adapter from one prefix" in text
    ok = parse_args({"model": "m", "engine": "vllm", "adapters": {"a": "s3://bkt/lora/a", "b": "s3://bkt/lora/b"}})
    assert ok.adapters["b"] == "s3://bkt/lora/b"


def test_deployment_options():
    fixed = parse_args({"model": "m", "num_replicas": 2, "max_ongoing_requests": 32, "max_queued_requests": 8})
    assert engine_options(fixed) == {"num_replicas": 2, "max_ongoing_requests": 32, "max_queued_requests": 8,
                                     "ray_actor_options": {"num_cpus": 1, "num_gpus": 0}}
    scaled = parse_args({"model": "m", "autoscaling": {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 4},
                         "num_gpus": 1})
    opts = engine_options(scaled)
    assert opts["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 4}
    assert opts["ray_actor_options"]["num_gpus"] == 1 and "num_replicas" not in opts
    assert ingress_options(scaled)["max_ongoing_requests"] == 2 * (64 + 256) * 4  # headroom: overflow gets 503s
