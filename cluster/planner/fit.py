"""The fit check: refuse a spec whose plan does not fit its GPUs, naming the numbers and the smallest change that fits."""

from __future__ import annotations

from cluster.errors import UserError
from cluster.planner.gpus import GiB
from cluster.planner.levers import host_ram_shortfall, suggest_changes
from cluster.planner.plan import Plan, plan_with, with_changes
from cluster.spec.job import JobSpec


def check_fit(plan: Plan, spec: JobSpec) -> None:
    """Raise UserError when `plan` does not fit its GPUs, with its numbers and the smallest change that would fit;
    does nothing when it fits, when no GPU is in play, or when `spec.plan.enforce` is false."""
    if not spec.plan.enforce:
        return
    check_host_ram(plan)
    if plan.fits is None:
        return
    if plan.fits:
        _check_fewest_workers(plan)
        return
    m, gpu = plan.memory, plan.gpu
    if not plan.rollout_fits:
        g = plan.spec.train.grpo
        raise UserError(
            f"plan: the vLLM rollout engine of {plan.spec.model.base} needs {_gib(m.rollout_engine)} GiB on each of its "
            f"{g.rollout_gpus} GPU(s) (weights, the KV cache of every worker's answers, reserve) but a {gpu.name} has "
            f"{_gib(gpu.memory)} GiB. Fix: train.grpo.rollout_gpus: {g.rollout_gpus * 2} (tensor parallel), fewer "
            "or shorter answers (train.grpo.num_generations, max_completion_length), or rollout: in_worker. "
            "To start anyway, set plan.enforce: false."
        )
    parts = {
        "weights": m.weights,
        "adapters": m.lora_params,
        "gradients": m.gradients,
        "optimizer": m.optimizer,
        "gathered layers": m.gather_buffers,
        "activations": m.activations,
        "never at once": -m.overlap,  # FSDP2's head tiles and gradients (cluster/planner/memory.py)
        "reserve": m.reserve,
    }
    breakdown = ", ".join(f"{k} {_gib(v)}" for k, v in parts.items() if v)
    s = plan.spec
    head = (
        f"plan: {s.model.method} of {s.model.base} on {plan.num_gpus} x {gpu.name} needs {_gib(m.total)} GiB per GPU "
        f"({breakdown} GiB) but a {gpu.name} has {_gib(gpu.memory)} GiB"
        + (f", of which plan.headroom keeps {s.plan.headroom:.0%} free." if s.plan.headroom else ".")
    )
    fixes = suggest_changes(plan)
    if fixes:
        fix = f" Fix: {fixes[0].description} ({_gib(fixes[0].total)} GiB per GPU)"
        others = "; ".join(f"{c.description} ({_gib(c.total)} GiB)" for c in fixes[1:4])
        fix += f"; or {others}." if others else "."
    else:  # every lever and every combination of them was tried (cluster/planner/levers.py)
        fix = " Fix: no change rayfit knows of fits this GPU; use a GPU with more memory or a smaller model."
    raise UserError(head + fix + " To start anyway, set plan.enforce: false.")


def _check_fewest_workers(plan: Plan) -> None:
    """An elastic run (cluster.min_workers) goes on with fewer workers after losing nodes; under ZeRO each then holds
    a larger share, so the plan must also fit on the fewest. Raise UserError naming the fewest that do fit."""
    c = plan.spec.cluster
    if c.min_workers is None or c.min_workers >= c.num_workers:
        return
    low = _on_workers(plan, c.min_workers)
    if low.fits:
        return
    fitting = next((n for n in range(c.min_workers + 1, c.num_workers) if _on_workers(plan, n).fits), c.num_workers)
    raise UserError(
        f"plan: cluster.min_workers is {c.min_workers}, but on {c.min_workers} x {plan.gpu.name} (where an elastic run "
        f"goes on after losing nodes) {plan.spec.model.method} of {plan.spec.model.base} needs "
        f"{_gib(low.memory.total)} GiB per GPU and a {plan.gpu.name} has {_gib(plan.gpu.memory)} GiB. "
        f"Fix: cluster.min_workers: {fitting} (the fewest that fit), or cluster.offload_optimizer: true. "
        "To start anyway, set plan.enforce: false."
    )


def _on_workers(plan: Plan, workers: int) -> Plan:
    spec = with_changes(plan.spec, {"cluster": {"num_workers": workers, "min_workers": None}})
    return plan_with(spec, plan.config, plan.config_source, plan.gpu, plan.price_per_gpu_hour, None)


def check_host_ram(plan: Plan) -> None:
    """Raise UserError when the spec offloads (optimizer, parameters or activations) more than the host RAM its
    plan allows per worker, naming the numbers and the fix."""
    short = host_ram_shortfall(plan.spec, plan.memory)
    if not short or not plan.spec.plan.enforce:
        return
    m, s = plan.memory, plan.spec
    asked = [
        name
        for name, on in (
            ("cluster.offload_optimizer", s.cluster.offload_optimizer),
            ("cluster.offload_params", s.cluster.offload_params),
            ("train.activation_offloading", s.train.activation_offloading),
        )
        if on
    ]
    raise UserError(
        f"plan: {', '.join(asked) or 'loading'} needs {_gib(m.host_offload + m.host_load)} GiB of host RAM per worker "
        f"(offload {_gib(m.host_offload)}, loading {_gib(m.host_load)}) but plan.host_ram_per_worker_gib is "
        f"{s.plan.host_ram_per_worker_gib:g}, {_gib(short)} GiB short. Fix: turn off {asked[-1] if asked else 'offload'}, "
        "use more workers, or raise plan.host_ram_per_worker_gib if the nodes have more RAM. "
        "To start anyway, set plan.enforce: false."
    )


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"
