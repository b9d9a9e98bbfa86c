"""The `cluster` section: workers, accelerators and DeepSpeed sharding."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cluster.spec.base import Problem, Section


class ClusterSpec(Section):
    """How the job is spread over the Ray cluster."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU).")
    gpus_per_worker: float = Field(1, ge=0, description="GPUs per worker; 0 trains on CPU.")
    cpus_per_worker: float = Field(4, gt=0, description="CPUs per worker (data loading, and the compute itself on CPU).")
    accelerator_type: str | None = Field(None, description="Ray accelerator type to place workers on, e.g. H100 or A100-80G.")
    deepspeed: Literal["none", "zero2", "zero3"] = Field("none", description="DeepSpeed ZeRO stage; none runs plain DDP.")
    offload_optimizer: bool = Field(False, description="Keep optimizer states in host RAM (ZeRO-2/3).")
    offload_params: bool = Field(False, description="Keep parameters in host RAM between uses (ZeRO-3 only).")
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

    @property
    def use_gpu(self) -> bool:
        """Whether workers ask Ray for GPUs."""
        return self.gpus_per_worker > 0

    def problems(self) -> list[Problem]:
        out = []
        if self.offload_params and self.deepspeed != "zero3":
            out.append(
                Problem(
                    "offload_params", "parameter offload needs ZeRO-3.", "set cluster.deepspeed: zero3, or offload_params: false."
                )
            )
        if self.offload_optimizer and self.deepspeed == "none":
            out.append(
                Problem("offload_optimizer", "optimizer offload needs DeepSpeed.", "set cluster.deepspeed: zero2 or zero3.")
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
