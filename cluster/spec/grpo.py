"""The `train.grpo` section: GRPO with verifiable rewards (TRL `GRPOConfig`), scored by OpenAI-shaped graders."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cluster.graders.grading import Grader
from cluster.spec.base import Problem, Section

# TRL 1.16's GRPOConfig.loss_type values (trl/trainer/grpo_config.py).
GrpoLoss = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


class GrpoSpec(Section):
    """Group Relative Policy Optimization: sample a group of answers per prompt, reward them with graders."""

    num_generations: int = Field(8, ge=1, description="Answers sampled per prompt (the group); at least 2.")
    max_completion_length: int = Field(256, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    beta: float = Field(
        0.0, ge=0, description="KL weight against the reference (for LoRA: the base with the adapter disabled); 0 skips it."
    )
    epsilon: float = Field(0.2, gt=0, description="Clipping range of the policy ratio.")
    loss_type: GrpoLoss = Field("dapo", description="TRL's GRPO loss: dapo (TRL's default), grpo, dr_grpo, bnpo, ...")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO)."
    )
    graders: list[Grader] = Field(
        default_factory=list,
        description="Graders in OpenAI's shapes (string_check, text_similarity, regex, json_schema, python, "
        "score_model, multi); the reward is their weighted mean.",
    )
    weights: list[float] | None = Field(None, description="One weight per grader (default: equal).")
    rollout: Literal["in_worker", "vllm"] = Field(
        "in_worker", description="in_worker: the training workers sample; vllm: a vLLM engine on Ray does."
    )
    rollout_gpus: int = Field(
        1,
        ge=1,
        description="GPUs of the vLLM rollout engine (its tensor parallelism) on a GPU cluster; on CPUs it takes one CPU.",
    )
    generation_timeout_s: float = Field(
        600.0, gt=0, description="Longest one rollout, weight sync or engine start may take before the run stops."
    )
    max_grader_failures: int = Field(
        10, ge=0, description="Grader calls that may raise or time out (each scores 0 and is named) before the run stops."
    )

    def problems(self) -> list[Problem]:
        out = [p.within(f"graders.{i}") for i, g in enumerate(self.graders) for p in g.problems()]
        if self.num_generations < 2:
            out.append(
                Problem(
                    "num_generations",
                    f"{self.num_generations} answer per prompt: GRPO's advantage is an answer's reward minus its "
                    "group's mean, which is always 0 for a group of one.",
                    "set train.grpo.num_generations to 2 or more (4 to 16 is usual).",
                )
            )
        if self.weights is not None and len(self.weights) != len(self.graders):
            out.append(
                Problem(
                    "weights",
                    f"{len(self.weights)} weights for {len(self.graders)} graders.",
                    "give one weight per grader, or remove weights.",
                )
            )
        elif self.weights is not None and (any(w < 0 for w in self.weights) or sum(self.weights) <= 0):
            out.append(Problem("weights", "weights must be at least 0 and not all 0.", "use e.g. weights: [1, 0.5]."))
        names = [g.name for g in self.graders]
        for name in sorted({n for n in names if names.count(n) > 1}):
            out.append(Problem("graders", f"two graders are named '{name}'.", "give each grader its own name."))
        if self.loss_type == "luspo":
            out.append(
                Problem(
                    "loss_type",
                    "luspo needs sequence-level importance sampling, which rayfit does not set.",
                    "use dapo, grpo, dr_grpo, bnpo, cispo, sapo or vespo.",
                )
            )
        return out


def grpo_problems(
    grpo: GrpoSpec, micro_batch_size: int, gradient_accumulation_steps: int, workers: int, evaluating: bool
) -> list[Problem]:
    """Rules between GRPO and the batch: every generation batch holds whole groups, and so does every evaluation
    batch when evaluations run during training (TRL's GRPOConfig rules; paths relative to the root)."""
    out = []
    if not grpo.graders:
        out.append(
            Problem(
                "train.grpo.graders",
                "GRPO needs at least one grader to reward the answers.",
                "add e.g. - {type: string_check, name: exact, input: '{{sample.output_text}}', "
                "reference: '{{item.answer}}', operation: eq}.",
            )
        )
    batch = micro_batch_size * gradient_accumulation_steps * workers
    if grpo.num_generations >= 2 and batch % grpo.num_generations:
        out.append(
            Problem(
                "train.grpo.num_generations",
                f"the generation batch (micro_batch_size {micro_batch_size} x gradient_accumulation_steps "
                f"{gradient_accumulation_steps} x {workers} workers = {batch} answers) does not hold whole groups of "
                f"{grpo.num_generations}.",
                f"make micro_batch_size x gradient_accumulation_steps x num_workers a multiple of {grpo.num_generations}, "
                f"or set num_generations to a divisor of {batch}.",
            )
        )
    eval_batch = micro_batch_size * workers
    if evaluating and grpo.num_generations >= 2 and eval_batch % grpo.num_generations:
        out.append(
            Problem(
                "train.eval_steps",
                f"evaluations during training sample whole groups of {grpo.num_generations} answers per batch, but "
                f"an evaluation batch (micro_batch_size {micro_batch_size} x {workers} workers) holds {eval_batch}.",
                f"make micro_batch_size x num_workers a multiple of {grpo.num_generations}, or set train.eval_steps: "
                "null (the held-out reward is then measured by evaluate.enabled at the end).",
            )
        )
    return out
