"""GRPO on the workers: TRL's `GRPOTrainer` and `GRPOConfig` from `train.grpo`, rewarded by the spec's graders.

- One TRL reward function per grader (so TRL logs `rewards/<name>/mean` and `/std`), weighted by train.grpo.weights
  normalised to sum 1: TRL's weighted sum is then the graders' weighted mean, the reward rayfit reports everywhere.
- A grader failure scores 0 and is named with its row (cluster.graders.grading); the failures of every rank are
  counted together, and past train.grpo.max_grader_failures every rank stops with the same named error.
- Answers are sampled in the workers (TRL's generate) or by the run's vLLM actor (cluster/training/rollout.py); a
  rollout longer than train.grpo.generation_timeout_s stops the run with a named error on every rank.
- LoRA/QLoRA get the bare base and `peft_config`, so TRL's reference (beta > 0) is the base with the adapter
  disabled; a full fine-tune's reference is a frozen copy TRL loads from the same folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from cluster.errors import UserError
from cluster.graders.grading import GraderFailures, Grading, failure_message, normalised_weights
from cluster.spec import JobSpec
from cluster.training.args import trainer_kwargs
from cluster.training.collectives import any_rank, gather_objects


class RolloutTimeout(UserError):
    """Sampling the answers of one step took longer than train.grpo.generation_timeout_s."""


def grpo_args(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
) -> GRPOConfig:
    """TRL's `GRPOConfig`: the shared arguments plus train.grpo."""
    g = spec.train.grpo
    common = trainer_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start)
    common["include_num_input_tokens_seen"] = "no"  # GRPOTrainer counts prompt and answer tokens itself
    return GRPOConfig(
        **common,
        remove_unused_columns=False,  # item_json and where reach the reward functions
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        epsilon=g.epsilon,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        reward_weights=normalised_weights(g.graders, g.weights),
        # generate() stops at the bound (transformers' MaxTimeCriteria); GrpoTrainer then names it. The cache is
        # asked for explicitly: the training model is loaded with use_cache off (packed rows need it off).
        generation_kwargs={"max_time": g.generation_timeout_s, "use_cache": True},
    )


class GraderRewards:
    """TRL reward functions over one shared scorer, with failures counted across ranks."""

    def __init__(self, spec: JobSpec):
        g = spec.train.grpo
        self.grading = Grading(g.graders, g.weights, max_failures=sys.maxsize)  # the limit is checked across ranks
        self.allowed = g.max_grader_failures

    def functions(self) -> list:
        """One function per grader, named after it (TRL logs `rewards/<name>/mean`)."""
        return [self._function(i, grader.name) for i, grader in enumerate(self.grading.graders)]

    def _function(self, index: int, name: str):
        def reward(completions, item_json, where, **_) -> list[float]:
            scores = [
                self.grading.score_one(index, answer_text(c), json.loads(item), w)
                for c, item, w in zip(completions, item_json, where, strict=True)
            ]
            self._stop_past_the_limit()
            return scores

        reward.__name__ = name
        return reward

    def _stop_past_the_limit(self) -> None:
        """Every rank calls each reward function once per batch, so gathering here keeps the ranks in step."""
        failures = [f for part in gather_objects(self.grading.failures) for f in part]
        if len(failures) > self.allowed:
            raise GraderFailures(failure_message(failures, self.allowed))

    def close(self) -> None:
        """Stop the processes of python graders."""
        self.grading.close()


def answer_text(completion) -> str:
    """The answer of one completion: TRL passes conversational completions as [{"role": "assistant", ...}]."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


class GrpoTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with rayfit's bound on sampling time and the graders' processes closed at the end.

    TRL bounds neither its own generate nor a rollout function, and a hung rollout is the failure people meet most
    (trl#2923, trl#3671); in-worker sampling stops at the bound (generation_kwargs max_time) and is named here.
    """

    def __init__(self, *args, rewards: GraderRewards, bound_s: float, **kwargs):
        self.rewards, self.bound_s = rewards, bound_s
        super().__init__(*args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        started = time.monotonic()
        out = super()._generate_single_turn(*args, **kwargs)
        took = time.monotonic() - started
        if any_rank(took >= self.bound_s):  # every rank stops together, none waits in a collective
            raise RolloutTimeout(
                f"sampling the answers of step {self.state.global_step + 1} in the workers took {took:.0f} s, the "
                f"bound is train.grpo.generation_timeout_s {self.bound_s:g} s. Fix: lower train.grpo."
                "max_completion_length or num_generations, use train.grpo.rollout: vllm, or raise the bound."
            )
        return out

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.rewards.close()


def build_grpo_trainer(
    spec: JobSpec, tokenizer, ds_config, on_gpu, device_index, output_dir, train_ds, eval_ds, eval_on_start, callbacks, actors
):
    """The GrpoTrainer of `spec`, its model loaded from the base or from `model.init_from`; `actors` (the loop
    config's plain values from the driver) names the vLLM rollout actor when train.grpo.rollout is vllm."""
    from peft import PeftModel

    from cluster.model.load import lora_config
    from cluster.training.warm_start import load_start_model

    g = spec.train.grpo
    rollout = None
    if g.rollout == "vllm":
        from cluster.training.rollout import VllmRollout

        rollout = VllmRollout(spec, tokenizer, actors)
    model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False)
    fresh_adapter = spec.model.method != "full" and not isinstance(model, PeftModel)
    rewards = GraderRewards(spec)
    return GrpoTrainer(
        model=model,
        reward_funcs=rewards.functions(),
        args=grpo_args(spec, output_dir, ds_config, on_gpu, eval_ds is not None, eval_on_start),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(spec) if fresh_adapter else None,
        rollout_func=rollout,
        rewards=rewards,
        bound_s=g.generation_timeout_s,
    )
