"""KTO: unpaired thumbs-up/down feedback {prompt, completion, label}, TRL's `KTOTrainer` and `KTOConfig` (train.kto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.objectives.recipe import PlanTerms, Recipe
from cluster.spec import JobSpec


def prepare(spec: JobSpec, tokenizer, cache_dir: str):
    """Validated, split, shuffled and saved feedback rows (TRL tokenizes them on the workers)."""
    from cluster.data.preference_prepare import FEEDBACK, prepare_preferences

    return prepare_preferences(spec, tokenizer, cache_dir, FEEDBACK)


def check(spec: JobSpec, tokenizer):
    """Every check of `prepare`, nothing saved."""
    from cluster.data.preference_prepare import FEEDBACK, check_preferences

    return check_preferences(spec, tokenizer, FEEDBACK)


def kto_args(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
):
    """TRL's `KTOConfig`: the shared arguments plus train.kto."""
    from trl import KTOConfig

    from cluster.training.preference import precomputes_reference, preference_kwargs

    k = spec.train.kto
    return KTOConfig(
        **preference_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start),
        beta=k.beta,
        loss_type=k.loss_type,
        desirable_weight=k.desirable_weight,
        undesirable_weight=k.undesirable_weight,
        precompute_ref_log_probs=precomputes_reference(spec, k.reference),
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
    """TRL's KTOTrainer (reference: cluster/training/preference.py)."""
    from trl import KTOTrainer

    from cluster.training.preference import build_preference_trainer

    args = kto_args(spec, output_dir, ds_config, on_gpu, eval_ds is not None, eval_on_start)
    return build_preference_trainer(
        KTOTrainer, args, spec, tokenizer, ds_config, on_gpu, device_index, train_ds, eval_ds, callbacks
    )


def plan_terms(spec: JobSpec, config, counts) -> PlanTerms:
    """The completion and, for loss kto, its mismatched KL completion per row; a frozen reference as for DPO."""
    from cluster.planner.memory import frozen_copy_bytes

    k = spec.train.kto
    sequences = 2 if k.loss_type == "kto" else 1
    return PlanTerms(
        sequences,
        spec.data.max_seq_len,
        reference=frozen_copy_bytes(spec, counts) if k.reference == "frozen_copy" else 0,
    )


def evaluate(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step=None) -> dict:
    """Preference accuracy and reward margin of start and tuned on held-out feedback paired per prompt."""
    from cluster.evaluation.preference import evaluate_preference_run

    return evaluate_preference_run(spec, tuned_uri, out_uri, cache_dir, spec.train.kto.beta, step)


RECIPE = Recipe(name="kto", prepare=prepare, check=check, trainer=trainer, plan_terms=plan_terms, evaluate=evaluate)
