"""The objective's own settings: DPO on preference pairs and KTO on thumbs-up/down feedback (TRL's trainers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cluster.objectives.registry import RECIPES
from cluster.spec.base import Problem, Section

# The registry's names (cluster/objectives/registry.py): a new objective is allowed once it has a recipe.
Objective = Literal[tuple(RECIPES)]  # type: ignore[valid-type]
# TRL 1.16's DPOConfig.loss_type values (trl/trainer/dpo_config.py); several may be combined with loss_weights.
DpoLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
Reference = Literal["frozen_copy", "precomputed"]
REFERENCE_HELP = (
    "Full fine-tunes only (LoRA/QLoRA always use the base with the adapter disabled, no second model): "
    "frozen_copy keeps a frozen copy sharded like the policy; precomputed computes the reference log-probs once "
    "before training and keeps no copy. The planner counts each."
)


class DpoSpec(Section):
    """Direct Preference Optimization on {prompt, chosen, rejected} pairs (TRL `DPOConfig`)."""

    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference; higher stays closer.")
    loss_type: list[DpoLoss] = Field(
        default_factory=lambda: ["sigmoid"],
        min_length=1,
        description="TRL DPO loss(es): sigmoid is the DPO paper's; ipo, hinge, robust, ...",
    )
    loss_weights: list[float] | None = Field(None, description="Weight of each loss_type when several are combined.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Probability a preference label is flipped (robust, exo_pair).")
    reference: Reference = Field("frozen_copy", description=REFERENCE_HELP)

    def problems(self) -> list[Problem]:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            return [
                Problem(
                    "loss_weights",
                    f"{len(self.loss_weights)} weights for {len(self.loss_type)} loss types.",
                    "give one weight per loss_type, or remove loss_weights.",
                )
            ]
        return []


class KtoSpec(Section):
    """Kahneman-Tversky Optimization on unpaired {prompt, completion, label} feedback (TRL `KTOConfig`)."""

    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference; higher stays closer.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL KTO loss.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of thumbs-up losses (raise it when they are rarer).")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of thumbs-down losses.")
    reference: Reference = Field("frozen_copy", description=REFERENCE_HELP)


def objective_problems(objective: Objective, micro_batch_size: int, kto: KtoSpec) -> list[Problem]:
    """Rules between the objective and the rest of `train` (paths relative to `train`)."""
    if objective == "kto" and kto.loss_type == "kto" and micro_batch_size < 2:
        return [
            Problem(
                "micro_batch_size",
                "KTO estimates its KL term from mismatched completions inside one "
                "micro-batch, so it needs at least 2 rows per forward pass.",
                "set train.micro_batch_size: 2 or more.",
            )
        ]
    return []
