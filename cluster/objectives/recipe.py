"""What every objective provides: one `Recipe` per module in cluster/objectives/, chosen once by `train.objective`.

A recipe owns what differs between objectives (its data preparation and checks, its TRL trainer and config, its
planner terms, its evaluation). What they share sits one floor below, in cluster/data (readers, cache, report),
cluster/model (loading), cluster/training (arguments, callbacks, the worker loop) and cluster/evaluation (base and
tuned models, generation, the report), where every recipe reaches it without importing another recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlanTerms:
    """The planner's objective-dependent terms (cluster/planner), per worker, before ZeRO-3 sharding."""

    sequences_per_row: int  # sequences one training row puts through the model with gradients (DPO: 2)
    sequence_tokens: int  # longest sequence of a training forward (SFT: max_seq_len; GRPO: prompt + completion)
    reference: int = 0  # bytes of a reference model kept beside the policy (a frozen copy of a full fine-tune)
    generation: int = 0  # bytes of the KV cache while the worker samples answers (GRPO's in-worker rollouts)
    rollout_engine: int = 0  # bytes the separate rollout engine needs on its own device (GRPO's vLLM rollouts)
    decode_steps: int = 0  # tokens sampled one after another in each optimizer step (GRPO: max_completion_length)


def no_actors(spec) -> AbstractContextManager[dict[str, Any]]:
    """The default of `Recipe.actors`: nothing runs beside the training workers."""
    return nullcontext({})


def no_manifest_fields(spec) -> dict[str, Any]:
    """The default of `Recipe.manifest_fields`: the objective's name is all a checkpoint records."""
    return {}


@dataclass(frozen=True)
class Recipe:
    """One objective's functions. The driver calls `prepare`/`check`/`actors`, the workers `trainer`, the planner
    `plan_terms`, the evaluation task `evaluate`; checkpoint manifests add `manifest_fields`."""

    name: str
    # (spec, tokenizer, cache_dir) -> cluster.data.PreparedData: validated rows saved under cache_dir/<hash>/
    prepare: Callable[..., Any]
    # (spec, tokenizer) -> DataReport: every data check of `prepare`, nothing saved (`rayfit data check`)
    check: Callable[..., Any]
    # (spec, tokenizer, ds_config, on_gpu, device_index, output_dir, train_ds, eval_ds, eval_on_start, callbacks,
    # actors) -> a transformers Trainer (TRL's trainer of the objective with its config); `actors` are the plain
    # values that `actors` below yielded on the driver
    trainer: Callable[..., Any]
    # (spec, config, counts) -> PlanTerms
    plan_terms: Callable[..., PlanTerms]
    # (spec, tuned_uri, out_uri, cache_dir) -> the report dict written to out_uri/report.json
    evaluate: Callable[..., dict]
    # the eval metric that ranks checkpoints, and whether higher is better
    checkpoint_metric: tuple[str, bool] = ("eval_loss", False)
    # spec -> a context manager around training that starts what must run beside the workers and yields the
    # extra plain values the workers receive in their loop config
    actors: Callable[..., AbstractContextManager[dict[str, Any]]] = no_actors
    # spec -> extra fields of every checkpoint manifest
    manifest_fields: Callable[..., dict[str, Any]] = no_manifest_fields
