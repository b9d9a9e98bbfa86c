"""The `plan` section: the pre-flight memory/time/cost check and what it assumes."""

from __future__ import annotations

from pydantic import Field

from cluster.spec.base import Section


class PlanSpec(Section):
    """Assumptions of the planner and whether a spec that does not fit is refused."""

    enforce: bool = Field(True, description="Refuse to start when the plan says the job does not fit the GPUs.")
    gpu: str | None = Field(None, description="GPU model to plan for (e.g. H100-80GB); default: cluster.accelerator_type or what the cluster has.")
    price_per_gpu_hour: float | None = Field(None, ge=0, description="Price of one GPU hour, for the cost estimate.")
    mfu: float = Field(0.35, gt=0, le=1, description="Assumed model FLOPs utilisation for the time estimate.")
