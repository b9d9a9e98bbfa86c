"""What DPO and KTO share on the workers: their model, reference and TRL trainer from one config.

The reference model costs only what it must:
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

from cluster.spec import JobSpec
from cluster.training.args import trainer_kwargs


def precomputes_reference(spec: JobSpec, reference: str) -> bool:
    """Whether the reference log-probs are computed once before training (full fine-tunes that ask for it)."""
    return spec.model.method == "full" and reference == "precomputed"


def preference_kwargs(
    spec: JobSpec, output_dir: Path, ds_config: dict[str, Any] | None, on_gpu: bool, has_eval: bool, eval_on_start: bool
) -> dict[str, Any]:
    """The arguments DPOConfig and KTOConfig share: the common ones plus TRL's own tokenization of text rows."""
    common = trainer_kwargs(spec, output_dir, ds_config, on_gpu, has_eval, eval_on_start)
    return {**common, "max_length": spec.data.max_seq_len, "dataset_num_proc": None}


def build_preference_trainer(
    trainer_cls, args, spec: JobSpec, tokenizer, ds_config, on_gpu, device_index, train_ds, eval_ds, callbacks
):
    """TRL's DPOTrainer or KTOTrainer with `args`, its model loaded from the base or from `model.init_from`."""
    from peft import PeftModel

    from cluster.model.load import lora_config
    from cluster.training.warm_start import load_start_model

    adapter = spec.model.method != "full"
    model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False)
    fresh_adapter = adapter and not isinstance(model, PeftModel)
    ref_model = None
    if not adapter and not args.precompute_ref_log_probs:
        ref_model = load_start_model(spec, ds_config, on_gpu, device_index, wrap_adapter=False)  # ZeRO-3 shards it too
        ref_model.requires_grad_(False)
        ref_model.eval()
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
