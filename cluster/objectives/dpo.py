"""DPO: preference pairs {prompt, chosen, rejected}, TRL's `DPOTrainer` and `DPOConfig` (train.dpo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.objectives.recipe import PlanTerms, Recipe
from cluster.spec import JobSpec


def prepare(spec: JobSpec, tokenizer, cache_dir: str):
    """Validated, split and saved pairs (TRL tokenizes them on the workers)."""
    from cluster.data.preference_prepare import PAIRS, prepare_preferences

    return prepare_preferences(spec, tokenizer, cache_dir, PAIRS)


def check(spec: JobSpec, tokenizer):
    """Every check of `prepare`, nothing saved."""
    from cluster.data.preference_prepare import PAIRS, check_preferences

    return check_preferences(spec, tokenizer, PAIRS)


def dpo_args(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
):
    """TRL's `DPOConfig`: the shared arguments plus train.dpo."""
    from trl import DPOConfig

    from cluster.training.preference import precomputes_reference, preference_kwargs

    d = spec.train.dpo
    return DPOConfig(
        **preference_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start),
        beta=d.beta,
        loss_type=list(d.loss_type),
        loss_weights=d.loss_weights,
        label_smoothing=d.label_smoothing,
        precompute_ref_log_probs=precomputes_reference(spec, d.reference),
    )


def trainer(
    spec: JobSpec,
    tokenizer,
    ds_config,
    on_gpu,
    device_index,
    output_dir,
    train_ds,
    eval_ds,
    eval_on_start,
    callbacks,
    actors=None,
):
    """TRL's DPOTrainer (reference: cluster/training/preference.py)."""
    from trl import DPOTrainer

    from cluster.training.preference import build_preference_trainer

    args = dpo_args(spec, output_dir, ds_config, on_gpu, eval_ds is not None, eval_on_start)
    return build_preference_trainer(
        DPOTrainer, args, spec, tokenizer, ds_config, on_gpu, device_index, train_ds, eval_ds, callbacks
    )


def plan_terms(spec: JobSpec, config, counts) -> PlanTerms:
    """Chosen and rejected per pair; a frozen copy as reference for full fine-tunes with reference: frozen_copy."""
    from cluster.planner.memory import frozen_copy_bytes

    frozen = spec.train.dpo.reference == "frozen_copy"
    return PlanTerms(2, spec.data.max_seq_len, reference=frozen_copy_bytes(spec, counts) if frozen else 0)


def evaluate(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step=None) -> dict:
    """Preference accuracy and reward margin of start and tuned on held-out pairs."""
    from cluster.evaluation.preference import evaluate_preference_run

    return evaluate_preference_run(spec, tuned_uri, out_uri, cache_dir, spec.train.dpo.beta, step)


RECIPE = Recipe(name="dpo", prepare=prepare, check=check, trainer=trainer, plan_terms=plan_terms, evaluate=evaluate)
