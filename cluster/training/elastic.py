"""Elastic runs: a run written by some number of workers continues on another (fewer after a node is lost with no
replacement, more when capacity returns). Two things depend on the worker count: the global batch, kept by scaling
gradient accumulation, and ZeRO's partitioned optimizer (and ZeRO-3 parameter) state, which DeepSpeed can only load
on another worker count from its universal, topology-free form."""

from __future__ import annotations

import os
import re
from argparse import Namespace
from pathlib import Path

import torch
from transformers import TrainerCallback

from cluster.planner.plan import with_changes
from cluster.spec import JobSpec
from cluster.training.checkpoints import staged_copy

ZERO_SHARD = re.compile(r"(^|/)zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


def for_world(spec: JobSpec, world: int) -> tuple[JobSpec, str | None]:
    """The spec as `world` workers run it, and a line saying what changed (None when nothing did).

    Gradient accumulation is scaled so that the global batch stays num_workers × micro_batch_size ×
    gradient_accumulation_steps; where `world` does not divide it, the nearest global batch is used and named.
    """
    t, planned = spec.train, spec.cluster.num_workers
    if world == planned:
        return spec, None
    wanted = planned * t.gradient_accumulation_steps
    accum = max(1, round(wanted / world))
    line = (
        f"training on {world} of {planned} workers: gradient accumulation {accum} (was {t.gradient_accumulation_steps}),"
        f" global batch {world * accum * t.micro_batch_size} rows"
    )
    if world * accum != wanted:
        line += f" (the spec's is {wanted * t.micro_batch_size}: {world} workers do not divide it)"
    return with_changes(spec, {"train": {"gradient_accumulation_steps": accum}}), line


def checkpoint_world(manifest: dict) -> int | None:
    """How many workers wrote a checkpoint: its manifest's world_size, else the number of ZeRO optimizer shards
    (checkpoints written before world_size was recorded); None for a DDP checkpoint of unknown size."""
    if "world_size" in manifest:
        return int(manifest["world_size"])
    ranks = {m.group(2) for rel in manifest["files"] if (m := ZERO_SHARD.search(rel))}
    return len(ranks) or None


def universal_copy(local: Path, dest: Path) -> Path:
    """A copy of the checkpoint folder `local` (hard links where the file system allows) whose DeepSpeed state is
    also in universal form, with the `latest_universal` tag DeepSpeed reads when the config sets
    `checkpoint.load_universal`. `local` itself is left as it is: its manifest covers exactly its files."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tag = (local / "latest").read_text().strip()
    if (dest / "latest_universal").is_file() and (dest / f"{tag}_universal").is_dir():
        return dest  # converted already (another attempt on this node)
    staged_copy(local, dest)
    workers = max(1, min(4, os.cpu_count() or 1))
    ds_to_universal(
        Namespace(
            input_folder=str(dest / tag),
            output_folder=str(dest / f"{tag}_universal"),
            num_extract_workers=workers,
            num_merge_workers=max(1, workers // 2),
            keep_temp_folder=False,
            strict=True,
            inject_missing_state=True,
        )
    )
    return dest


class OwnStepCounters(TrainerCallback):
    """DeepSpeed's ZeRO-3 universal load (0.19.8, `load_hp_checkpoint_state_from_checkpoint_dir_stage3`) gives every
    optimizer sub-group one shared `step` tensor, which torch's AdamW then increments in place once per sub-group:
    from the second step after the resume, bias corrections use a step count too high (the losses drift from an
    uninterrupted run's, 2e-3 after 3 steps on the test model). Each sub-group gets its own counter before training."""

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO optimizer wraps torch's
        for param_state in getattr(inner, "state", {}).values():
            if isinstance(param_state.get("step"), torch.Tensor):
                param_state["step"] = param_state["step"].clone()
