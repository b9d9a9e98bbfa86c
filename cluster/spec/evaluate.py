"""The `evaluate` section: base versus tuned on held-out data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cluster.spec.base import Problem, Section

# bootstrapped over rows (evaluation/intervals.py); reward and pass_rate are GRPO's (evaluation/rewards.py)
INTERVAL_METRICS = ("rouge_l", "bleu", "exact_match", "format_compliance", "reward", "pass_rate")
GRADER_METRICS = ("reward", "pass_rate")  # scored by train.grpo.graders, so only GRPO runs have them
GateMetric = Literal[
    "eval_loss",
    "rouge_l",
    "bleu",
    "exact_match",
    "format_compliance",
    "preference_accuracy",
    "reward_margin",
    "reward",
    "pass_rate",
]


class EvaluateSpec(Section):
    """Whether and how the finetune job compares base and tuned models at its end."""

    enabled: bool = Field(False, description="Compare base and tuned on the eval set when training ends.")
    max_samples: int | None = Field(
        None,
        ge=0,
        description="Eval records scored with generation metrics (ROUGE-L, BLEU, exact match); null: every one; 0: none "
        "(eval loss only, no engine started).",
    )
    max_new_tokens: int = Field(128, ge=1, description="Greedy generation length for generation metrics.")
    batch_size: int = Field(8, ge=1, description="Prompts sent to a vLLM engine at a time (Ray Data batch).")
    replicas: int = Field(1, ge=1, description="vLLM engine replicas answering the held-out prompts (one GPU each on GPUs).")
    enforce_eager: bool | None = Field(
        None,
        description="vLLM without torch.compile / CUDA graphs: starts sooner, decodes slower. null: eager on CPU "
        "engines, compiled on GPUs (as rayfit generate).",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments for evaluation's engines (AsyncEngineArgs names)."
    )
    samples_shown: int = Field(
        3, ge=0, description="Generations shown side by side (prompt, reference, base, tuned) in the report."
    )
    format_regex: str | None = Field(
        None, description="Regex a compliant answer must fully match; its compliance rate is reported."
    )
    json_schema: dict | None = Field(
        None, description="JSON schema a compliant answer must satisfy; its compliance rate is reported."
    )
    max_regression: float | None = Field(
        None,
        ge=0,
        description="Gate: fail the job when tuned is worse than base on gate_metric by more than this fraction of the "
        "base value (0.0: tuned must be at least as good; none: never fail). The reports are written first.",
    )
    min_improvement: float | None = Field(
        None,
        ge=0,
        description="Gate: fail the job unless tuned beats base on gate_metric (a generation metric) by more than this, "
        "in the metric's units, with 95% confidence: the low end of the bootstrap interval of tuned - base must exceed "
        "it (0: any improvement beyond noise). None: no improvement asked.",
    )
    gate_metric: GateMetric = Field(
        "eval_loss",
        description="Metric the gate compares: eval_loss (lower is better) or a score (higher is better); GRPO runs: "
        "reward (the graders' weighted mean on held-out prompts) or pass_rate.",
    )

    def problems(self) -> list[Problem]:
        from cluster.graders.json_schema import schema_problem
        from cluster.graders.regex import pattern_problem

        found = [
            pattern_problem("format_regex", self.format_regex) if self.format_regex is not None else None,
            schema_problem("json_schema", self.json_schema) if self.json_schema is not None else None,
        ]
        out = [p for p in found if p]
        if self.min_improvement is not None and self.gate_metric not in INTERVAL_METRICS:
            out.append(
                Problem(
                    "min_improvement",
                    f"min_improvement needs a per-row interval, which {self.gate_metric} does not have.",
                    f"set gate_metric to one of {', '.join(INTERVAL_METRICS)}, or use max_regression.",
                )
            )
        if self.gate_metric == "format_compliance" and self.format_regex is None and self.json_schema is None:
            out.append(
                Problem(
                    "gate_metric",
                    "format_compliance is gated but neither format_regex nor json_schema is given.",
                    "set evaluate.format_regex or evaluate.json_schema, or gate another metric.",
                )
            )
        return out
