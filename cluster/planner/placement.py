"""The placement check: refuse a job before training when no node of the Ray cluster can ever run its merge or
evaluate task or an evaluation engine replica, with the numbers (what it asks for, what the largest nodes have)."""

from __future__ import annotations

from cluster.errors import UserError
from cluster.planner.gpus import find_gpu, known_gpu
from cluster.planner.plan import Plan
from cluster.planner.steps import StepRequest, gib

ACCELERATOR = "accelerator_type:"


def check_placement(plan: Plan, nodes: list[dict]) -> None:
    """Raise UserError when a step of `plan` (merge, evaluate) fits no alive node of `nodes` (as `ray.nodes()`
    returns them); does nothing when every step has a node or `plan.spec.plan.enforce` is false."""
    if not plan.spec.plan.enforce:
        return
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    steps = (plan.merge, plan.evaluate, plan.generate)
    problems = [_refusal(r, alive) for r in steps if r is not None and not _holders(r, alive)]
    if problems:
        raise UserError(" ".join(problems) + " To start anyway, set plan.enforce: false.")


def _holders(request: StepRequest, nodes: list[dict]) -> list[dict]:
    """The nodes whose total resources can run `request`."""
    return [
        n
        for n in nodes
        if n.get("CPU", 0) >= request.num_cpus
        and n.get("GPU", 0) >= request.num_gpus
        and n.get("memory", 0) >= request.host_ram
        and _gpu_memory(n) >= request.gpu_memory
    ]


def _gpu_memory(node: dict) -> float:
    """Memory of one GPU of a node, from its accelerator_type resource; unknown types are not held against it."""
    for key in node:
        if key.startswith(ACCELERATOR) and known_gpu(key.removeprefix(ACCELERATOR)):
            return find_gpu(key.removeprefix(ACCELERATOR)).memory
    return float("inf") if node.get("GPU", 0) else 0


def _refusal(request: StepRequest, nodes: list[dict]) -> str:
    need = f"{request.num_cpus:g} CPU, {gib(request.host_ram)} GiB host RAM"
    if request.num_gpus:
        need += f", 1 GPU with {gib(request.gpu_memory)} GiB"
    eligible = [n for n in nodes if n.get("CPU", 0) >= request.num_cpus and n.get("GPU", 0) >= request.num_gpus]
    largest = max((n.get("memory", 0) for n in eligible), default=0)
    have = (
        f"the largest node with {request.num_cpus:g} CPU{' and a GPU' if request.num_gpus else ''} has "
        f"{gib(largest)} GiB of Ray memory"
        if eligible
        else f"no node has {request.num_cpus:g} CPU{' and a GPU' if request.num_gpus else ''}"
    )
    fix = {
        "merge": "add a node (worker group) with more memory, or set merge.enabled: false and merge later with "
        "`rayfit merge RUN` on a machine that holds it",
        "evaluate": "add a node with more memory, or set evaluate.enabled: false and evaluate later with `rayfit evaluate RUN`",
        "generate": "add a node with more memory, set evaluate.max_samples: 0 (eval loss only, no engine), or set "
        "evaluate.enabled: false and evaluate later with `rayfit evaluate RUN`",
    }[request.step]
    what = "an evaluation engine replica" if request.step == "generate" else f"the {request.step} task"
    return (
        f"plan: {what} needs {need} ({request.how}), but {have} "
        f"({len(nodes)} alive node{'s' if len(nodes) != 1 else ''}). Fix: {fix}."
    )
