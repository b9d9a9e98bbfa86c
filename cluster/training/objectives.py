"""The TRL trainer of each objective (SFT, DPO, KTO), on the same model loading, arguments and callbacks.

The reference model of DPO and KTO costs only what it must:
- LoRA/QLoRA: the trainer gets the bare base and `peft_config`, so TRL wraps it and computes the reference with the
  adapter disabled (`use_adapter(model, None)`): no second model, not even a copy of the adapter.
- LoRA/QLoRA warm-started from an earlier adapter: TRL copies that adapter as "ref" (adapter-sized), so the
  reference is the earlier model, as DPO after SFT needs.
- Full fine-tunes: `reference: frozen_copy` loads a second, frozen copy through the same loader (ZeRO-3 shards it
  like the policy); `reference: precomputed` has TRL compute the reference log-probs once before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.model.load import lora_config
from cluster.spec import JobSpec
from cluster.training.args import sft_args, trainer_kwargs
from cluster.training.warm_start import load_start_model


def build_objective_trainer(
    spec: JobSpec,
    tokenizer,
    ds_config: dict[str, Any] | None,
    on_gpu: bool,
    device_index: int,
    output_dir: Path,
    train_ds,
    eval_ds,
    eval_on_start: bool,
    callbacks: list,
):
    """The trainer for `spec.train.objective`, its model loaded from the base or from `model.init_from`."""
    from peft import PeftModel

    objective = spec.train.objective
    if objective == "grpo":
        from cluster.errors import UserError
        from cluster.spec.grpo import TRAINING_PENDING

        raise UserError(TRAINING_PENDING)
    if objective == "sft":
        from trl import SFTTrainer

        from cluster.training.collator import make_collator

        model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=True)
        args = sft_args(spec, output_dir, ds_config, on_gpu, has_eval=eval_ds is not None, eval_on_start=eval_on_start)
        return SFTTrainer(
            model=model,
            args=args,
            data_collator=make_collator(tokenizer),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    from trl import DPOTrainer, KTOTrainer

    adapter = spec.model.method != "full"
    model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False)
    fresh_adapter = adapter and not isinstance(model, PeftModel)
    args = preference_args(spec, output_dir, ds_config, on_gpu, eval_ds is not None, eval_on_start)
    ref_model = None
    if not adapter and not args.precompute_ref_log_probs:
        ref_model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False)  # ZeRO-3 shards it too
        ref_model.requires_grad_(False)
        ref_model.eval()
    trainer_cls = DPOTrainer if objective == "dpo" else KTOTrainer
    return trainer_cls(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(spec) if fresh_adapter else None,
    )


def preference_args(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
):
    """TRL's `DPOConfig` or `KTOConfig` for the spec: the shared arguments plus the objective's own section."""
    from trl import DPOConfig, KTOConfig

    t = spec.train
    common = trainer_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start)
    common.update(max_length=spec.data.max_seq_len, dataset_num_proc=None)
    if t.objective == "dpo":
        d = t.dpo
        return DPOConfig(
            **common,
            beta=d.beta,
            loss_type=list(d.loss_type),
            loss_weights=d.loss_weights,
            label_smoothing=d.label_smoothing,
            precompute_ref_log_probs=precomputes_reference(spec),
        )
    k = t.kto
    return KTOConfig(
        **common,
        beta=k.beta,
        loss_type=k.loss_type,
        desirable_weight=k.desirable_weight,
        undesirable_weight=k.undesirable_weight,
        precompute_ref_log_probs=precomputes_reference(spec),
    )


def precomputes_reference(spec: JobSpec) -> bool:
    """Whether the reference log-probs are computed once before training (full fine-tunes that ask for it)."""
    section = spec.train.dpo if spec.train.objective == "dpo" else spec.train.kto
    return spec.train.objective != "sft" and spec.model.method == "full" and section.reference == "precomputed"
