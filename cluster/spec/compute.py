"""The `cluster` section: workers, accelerators and how the model is sharded across them."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field, model_validator

from cluster.sharding import DEEPSPEED_SPELLINGS, SHARDINGS
from cluster.spec.base import Problem, Section, SpecDeprecation

ShardingName = Literal[tuple(SHARDINGS)]


class ClusterSpec(Section):
    """How the job is spread over the Ray cluster."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU).")
    gpus_per_worker: float = Field(1, ge=0, description="GPUs per worker; 0 trains on CPU.")
    cpus_per_worker: float = Field(4, gt=0, description="CPUs per worker (data loading, and the compute itself on CPU).")
    accelerator_type: str | None = Field(None, description="Ray accelerator type to place workers on, e.g. H100 or A100-80G.")
    sharding: ShardingName = Field(
        "ddp",
        description="How the model is spread over the workers: ddp keeps a whole copy on each; deepspeed_zero2 "
        "splits gradients and optimizer states; deepspeed_zero3 and fsdp2 also split the weights (a QLoRA's 4-bit "
        "base too), loaded already split so no worker holds the whole model (docs/sharding.md).",
    )
    deepspeed: Literal["none", "zero2", "zero3"] | None = Field(
        None,
        exclude=True,
        description="Deprecated spelling of cluster.sharding: none is ddp, zero2 is deepspeed_zero2, zero3 is deepspeed_zero3.",
    )
    offload_optimizer: bool = Field(
        False, description="Keep optimizer states in host RAM (deepspeed_zero2/3; fsdp2 together with offload_params)."
    )
    offload_params: bool = Field(
        False,
        description="Keep parameters in host RAM between uses (deepspeed_zero3; fsdp2, whose CPU offload also moves "
        "gradients and optimizer states, so it needs offload_optimizer too).",
    )
    placement: Literal["pack", "spread"] = Field(
        "pack",
        description="How workers are placed on nodes: pack fills a node before the next (fastest "
        "communication), spread puts each worker on a different node where it can (a lost node takes fewer workers).",
    )
    checkpoint_upload: Literal["sync", "async"] = Field(
        "sync",
        description="sync: training waits while each checkpoint uploads. async: Ray Train uploads in the "
        "background while training goes on; the manifest is still written only after every node's files are stored.",
    )
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint before the run fails.")
    min_workers: int | None = Field(
        None,
        ge=1,
        description="Elastic training: after a node is lost with no replacement the run goes on with as "
        "few as this many workers, and grows back to num_workers when capacity returns (Ray Train's elastic "
        "ScalingConfig). Gradient accumulation grows on fewer workers so the global batch stays num_workers × "
        "micro_batch_size × gradient_accumulation_steps; ZeRO checkpoints are resharded for the new worker count "
        "(DeepSpeed's universal checkpoint). Null: the run needs all num_workers.",
    )
    resize_check_s: float = Field(
        60,
        gt=0,
        description="Elastic runs: how often, in seconds, Ray Train checks "
        "whether more workers fit while training is healthy (it restarts from the newest "
        "checkpoint on more workers when they do).",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, data):
        """`deepspeed: zero3` still works and means `sharding: deepspeed_zero3`, with a warning naming the new key.
        Given together with `sharding`, it stays for `problems()` to name."""
        if not isinstance(data, dict) or "deepspeed" not in data or "sharding" in data:
            return data
        old = data["deepspeed"]
        if not isinstance(old, str) or old not in DEEPSPEED_SPELLINGS:
            return data  # pydantic names the bad value (a list or a mapping here included)
        new = DEEPSPEED_SPELLINGS[old]
        warnings.warn(
            f"cluster.deepspeed: {old} is deprecated; write cluster.sharding: {new} (the same setup).",
            SpecDeprecation,
            stacklevel=2,
        )
        return {**{k: v for k, v in data.items() if k != "deepspeed"}, "sharding": new}

    @property
    def use_gpu(self) -> bool:
        """Whether workers ask Ray for GPUs."""
        return self.gpus_per_worker > 0

    @property
    def zero_stage(self) -> int:
        """DeepSpeed's ZeRO stage of the chosen sharding; 0 when it is not DeepSpeed."""
        return SHARDINGS[self.sharding].zero_stage

    def problems(self) -> list[Problem]:
        out = []
        if self.deepspeed is not None:
            both = self.sharding == "fsdp2" and self.deepspeed != "none"
            out.append(
                Problem(
                    "deepspeed",
                    f"FSDP2 and DeepSpeed cannot both shard one model: cluster.sharding is fsdp2 and cluster.deepspeed "
                    f"is {self.deepspeed}."
                    if both
                    else f"cluster.deepspeed ({self.deepspeed}) is the deprecated spelling of cluster.sharding "
                    f"({self.sharding}), and both are given.",
                    "keep one: cluster.sharding: fsdp2 or cluster.sharding: deepspeed_zero3, and remove "
                    "cluster.deepspeed (its deprecated spelling)."
                    if both
                    else "remove cluster.deepspeed.",
                )
            )
        if self.offload_params and self.sharding not in ("deepspeed_zero3", "fsdp2"):
            out.append(
                Problem(
                    "offload_params",
                    f"parameter offload needs sharded weights, but cluster.sharding is {self.sharding}.",
                    "set cluster.sharding: deepspeed_zero3 or fsdp2, or offload_params: false.",
                )
            )
        if self.offload_optimizer and self.sharding == "ddp":
            out.append(
                Problem(
                    "offload_optimizer",
                    "optimizer offload needs sharded optimizer states, but cluster.sharding is ddp.",
                    "set cluster.sharding: deepspeed_zero2, deepspeed_zero3 or fsdp2.",
                )
            )
        if self.sharding == "fsdp2" and self.offload_optimizer != self.offload_params:
            out.append(
                Problem(
                    "offload_optimizer" if self.offload_optimizer else "offload_params",
                    "FSDP2's CPU offload keeps parameters, gradients and optimizer states in host RAM together.",
                    "set both cluster.offload_params and cluster.offload_optimizer to true, or both to false.",
                )
            )
        if self.min_workers is not None and self.min_workers > self.num_workers:
            out.append(
                Problem(
                    "min_workers",
                    f"min_workers ({self.min_workers}) is more than num_workers ({self.num_workers}).",
                    f"set cluster.min_workers to at most {self.num_workers}, or raise num_workers.",
                )
            )
        return out
