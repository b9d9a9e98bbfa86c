"""Where config.json comes from, GPU names, and the time and cost arithmetic."""

from __future__ import annotations

import json

import pytest

from cluster.errors import UserError
from cluster.planner import find_gpu, gpu_from_cluster_resources, make_plan
from cluster.planner.architectures import load_config, table_key


@pytest.mark.parametrize(
    "hub_id, key",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-70B", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
        ("huggyllama/llama-65b", "llama-65b"),
        ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3"),
        ("someone/unknown-model", None),
    ],
)
def test_hub_ids_map_to_the_built_in_table(hub_id, key):
    assert table_key(hub_id) == key


def test_unknown_hub_model_names_the_fix():
    with pytest.raises(UserError, match="not in the local hub cache and not in rayfit's built-in table"):
        load_config("someone/unknown-model")


def test_local_folder_reads_only_config_json(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())  # no weights, no tokenizer
    config, source = load_config(str(tmp_path))
    assert source == str(tmp_path / "config.json") and config.num_hidden_layers == 2
    with pytest.raises(UserError, match="has no config.json"):
        load_config(str(tmp_path.parent))


def test_gpu_names_from_ray_and_cuda():
    assert find_gpu("NVIDIA H100 80GB HBM3").name == find_gpu("h100").name == "H100-80GB"
    assert gpu_from_cluster_resources({"CPU": 64, "GPU": 8, "accelerator_type:A100-80G": 1}) == "A100-80GB"
    assert gpu_from_cluster_resources({"CPU": 4}) is None
    with pytest.raises(UserError, match="unknown GPU 'H900'"):
        find_gpu("H900")


def test_time_and_cost_follow_from_flops(spec):
    s = spec("meta-llama/Llama-3.1-8B-Instruct", seq=2048, workers=8)
    plan = make_plan(s, gpu="H100-80GB", price_per_gpu_hour=2.0, dataset_tokens=100_000_000)
    t, n = plan.throughput, plan.counts.total
    attention = 2 * 32 * 2048 * 4096
    # frozen weights: forward 2N, input gradients 2N, adapter weight gradients, recomputed forward
    assert t.flops_per_token == (2 * n + attention) * 2 + 2 * n + 6 * plan.counts.trainable + 2 * attention
    assert t.tokens_per_s == pytest.approx(0.35 * 989e12 * 8 / t.flops_per_token)
    assert t.wall_time_s == pytest.approx(100_000_000 / t.tokens_per_s)
    assert t.cost == pytest.approx(t.wall_time_s / 3600 * 8 * 2.0)
    full = make_plan(spec("meta-llama/Llama-3.1-8B-Instruct", method="full", seq=2048, checkpointing=False))
    assert full.throughput.flops_per_token == 6 * n + 3 * attention


def test_plan_json_is_plain(spec):
    plan = make_plan(spec("meta-llama/Llama-3.1-8B-Instruct"), gpu="L40S")
    out = json.loads(json.dumps(plan.to_json()))
    assert out["memory_per_gpu"]["total"] == plan.memory.total and out["fits"] is True
    assert set(out["by_sharding"]) == {
        "ddp",
        "zero2",
        "zero2+offload",
        "zero3",
        "zero3+offload",
        "zero3+offload_all",
        "fsdp2",
        "fsdp2+offload",
    }


def test_object_store_base_reads_config_json_alone(tiny_model_dir):
    import fsspec

    # memory:// is an object store to cluster.storage, like s3:// without a server
    fs = fsspec.filesystem("memory")
    fs.pipe("/models/tiny/config.json", (tiny_model_dir / "config.json").read_bytes())
    config, source = load_config("memory://models/tiny")
    assert source == "memory://models/tiny/config.json" and config.hidden_size == 128
    with pytest.raises(UserError, match="no config.json at memory://models/missing/config.json"):
        load_config("memory://models/missing")
