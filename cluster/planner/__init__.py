"""The planner: memory, time and cost of a spec from its base model's config.json, and a fit check.

API:
    make_plan(spec, gpu=None, num_gpus=None, price_per_gpu_hour=None, dataset_tokens=None) -> Plan
    check_fit(plan, spec) -> None            raises cluster.errors.UserError when it does not fit (unless plan.enforce is false)
    format_plan(plan) -> str                 the table `rayfit plan` prints; plan.to_json() for machines
    gpu_from_cluster_resources(ray.cluster_resources()) -> str | None   the GPU name to pass as `gpu`
    check_placement(plan, ray.nodes()) -> None  raises UserError when no node can run the merge or evaluate task
    plan.merge, plan.evaluate: StepRequest      those tasks' CPU, GPU, host RAM and GPU memory (`.ray_options()`)
"""

from cluster.planner.fit import check_fit
from cluster.planner.gpus import GPUS, Gpu, find_gpu, gpu_from_cluster_resources
from cluster.planner.levers import Change, suggest_changes
from cluster.planner.placement import check_placement
from cluster.planner.plan import Plan, make_plan
from cluster.planner.report import format_plan
from cluster.planner.steps import StepRequest

__all__ = [
    "GPUS",
    "Change",
    "Gpu",
    "Plan",
    "StepRequest",
    "check_fit",
    "check_placement",
    "find_gpu",
    "format_plan",
    "gpu_from_cluster_resources",
    "make_plan",
    "suggest_changes",
]
