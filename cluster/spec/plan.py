"""The `plan` section: the pre-flight memory/time/cost check and what it assumes."""

from __future__ import annotations

from pydantic import Field

from cluster.spec.base import Problem, Section


class PlanSpec(Section):
    """Assumptions of the planner (`rayfit plan`, and the check before a job holds GPUs) and whether a spec that
    does not fit is refused."""

    enforce: bool = Field(
        True,
        description="Refuse to start when the plan says the job does not fit the GPUs; "
        "false starts anyway (the plan is still printed).",
    )
    gpu: str | None = Field(
        None,
        description="GPU model to plan for (e.g. H100-80GB, A100-40GB, L4-24GB; see "
        "`rayfit plan --help`); default: cluster.accelerator_type, else the GPU the cluster reports.",
    )
    price_per_gpu_hour: float | None = Field(None, ge=0, description="Price of one GPU hour, for the cost estimate.")
    mfu: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Assumed fraction of the GPU's dense bf16 peak spent on the model's "
        "FLOPs (recomputation included), for the time estimate.",
    )
    headroom: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="Fraction of each GPU's memory kept free on top of the "
        "planner's own reserve (CUDA context and allocator slack), e.g. 0.05 for a safety margin.",
    )

    host_ram_per_worker_gib: float | None = Field(
        None,
        gt=0,
        description="Host RAM each worker may use (GiB): the node's RAM divided by its GPUs, less what the OS "
        "needs. Offload (optimizer, parameters, activations) must fit in it; a suggested fix never exceeds it. "
        "Null: host RAM is not checked.",
    )

    def problems(self) -> list[Problem]:
        if self.gpu is None:
            return []
        from cluster.planner.gpus import GPUS, known_gpu  # lazy: the planner imports the spec

        if known_gpu(self.gpu):
            return []
        return [Problem("gpu", f"unknown GPU {self.gpu!r}.", f"use one of {', '.join(g.name for g in GPUS)}.")]
