"""The TRL trainer arguments a spec implies; every value comes from the spec or is fixed here for a stated reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.spec import JobSpec
from cluster.training.fsdp import fsdp_trainer_args
from cluster.training.levers import lever_args


def sft_args(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
):
    """Trainer arguments for one worker: local checkpoints in `output_dir`, evaluation only when there is eval data."""
    from trl import SFTConfig

    return SFTConfig(
        **trainer_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start),
        remove_unused_columns=False,  # position_ids are not in the forward signature TRL inspects
        dataset_kwargs={"skip_prepare_dataset": True},  # cluster.data already tokenized, masked and packed
    )


def trainer_kwargs(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool = False
) -> dict[str, Any]:
    """The `transformers.TrainingArguments` every objective shares (each recipe's TRL config extends them)."""
    from cluster.objectives import recipe_for

    t = spec.train
    evaluating = has_eval and t.eval_steps is not None
    best, higher = recipe_for(spec).checkpoint_metric
    return dict(
        output_dir=str(output_dir),
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=t.eval_steps if evaluating else None,
        eval_on_start=evaluating and eval_on_start,  # the base model's eval loss, the point a run improves from
        metric_for_best_model=best if evaluating else None,
        greater_is_better=higher,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,  # local copies only; storage keeps the best k (Ray's CheckpointConfig)
        seed=t.seed,
        data_seed=t.seed,
        report_to=list(t.report_to) or "none",
        use_cpu=not on_gpu,
        bf16=on_gpu and spec.model.dtype == "bfloat16",
        fp16=on_gpu and spec.model.dtype == "float16",
        deepspeed=ds_config,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
        **lever_args(spec),
        **fsdp_trainer_args(spec),
    )
