"""The fit check: refuse a spec whose plan does not fit its GPUs, naming the numbers and the smallest change that fits."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from cluster.errors import UserError
from cluster.planner.gpus import GiB
from cluster.planner.plan import Plan, plan_with, with_changes
from cluster.spec.base import SpecError
from cluster.spec.job import JobSpec

MAX_WORKERS = 1024
BATCH_RANK, WORKERS_RANK = 0, 3  # ranks of _single_changes that get special handling


@dataclass(frozen=True)
class Change:
    """One change to a spec that the planner says fits: what to set, and the per-GPU total it gives."""

    description: str
    changes: dict[str, dict]
    total: int


def check_fit(plan: Plan, spec: JobSpec) -> None:
    """Raise UserError when `plan` does not fit its GPUs, with its numbers and the smallest change that would fit;
    does nothing when it fits, when no GPU is in play, or when `spec.plan.enforce` is false."""
    if not spec.plan.enforce or plan.fits is None:
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
        "ZeRO-3 buffers": m.zero3_buffers,
        "activations": m.activations,
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
    else:
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


def suggest_changes(plan: Plan) -> list[Change]:
    """Changes that make `plan` fit, least disruptive first; single changes, else the first combination that fits."""
    candidates = sorted(_single_changes(plan), key=lambda c: c[0])  # stable: keeps the order within a rank
    fitting, ranks = [], set()
    for rank, description, changes in candidates:
        if rank == BATCH_RANK and rank in ranks:
            continue  # the largest micro-batch that fits is enough; smaller ones fit too
        change = _more_workers(plan) if rank == WORKERS_RANK else _try(plan, description, changes)
        if change:
            fitting.append(change)
            ranks.add(rank)
    if fitting:
        return fitting
    for description, changes in _combined_changes(plan):
        change = _try(plan, description, changes)
        if change:
            return [change]
    return []


def _single_changes(plan: Plan) -> list[tuple[int, str, dict]]:
    """One-setting changes ranked by what they cost: 0 batch shape, 1 recomputation, 2 sharding, 3 more GPUs,
    4 offload to host (slow), 5 a different method (changes what is trained)."""
    s = plan.spec
    t, c, m = s.train, s.cluster, s.model
    out = [(WORKERS_RANK, "more workers", {})]
    mb = t.micro_batch_size // 2
    while mb >= 1:
        ga = t.gradient_accumulation_steps * t.micro_batch_size // mb
        out.append(
            (
                BATCH_RANK,
                f"train.micro_batch_size: {mb} with gradient_accumulation_steps: {ga} (same batch)",
                {"train": {"micro_batch_size": mb, "gradient_accumulation_steps": ga}},
            )
        )
        mb //= 2
    if not t.gradient_checkpointing:
        out.append((1, "train.gradient_checkpointing: true", {"train": {"gradient_checkpointing": True}}))
    if c.deepspeed == "none" and c.num_workers > 1:
        out.append((2, "cluster.deepspeed: zero2", {"cluster": {"deepspeed": "zero2"}}))
    if c.deepspeed != "zero3" and m.method != "qlora" and c.num_workers > 1:
        out.append((2, "cluster.deepspeed: zero3", {"cluster": {"deepspeed": "zero3"}}))
    if not c.offload_optimizer:
        stage = c.deepspeed if c.deepspeed != "none" else "zero2"
        out.append(
            (
                4,
                f"cluster.deepspeed: {stage} with offload_optimizer: true",
                {"cluster": {"deepspeed": stage, "offload_optimizer": True}},
            )
        )
    if not c.offload_params and m.method != "qlora":
        out.append(
            (
                4,
                "cluster.deepspeed: zero3 with offload_optimizer: true and offload_params: true",
                {"cluster": {"deepspeed": "zero3", "offload_optimizer": True, "offload_params": True}},
            )
        )
    if m.method == "full":
        out.append((5, "model.method: lora", {"model": {"method": "lora"}}))
    if m.method != "qlora":
        sharding = {"deepspeed": "zero2" if c.deepspeed == "zero3" else c.deepspeed, "offload_params": False}
        out.append(
            (
                5,
                "model.method: qlora" + (" with cluster.deepspeed: zero2" if c.deepspeed == "zero3" else ""),
                {"model": {"method": "qlora"}, "cluster": sharding},
            )
        )
    return out


def _more_workers(plan: Plan) -> Change | None:
    """The fewest GPUs that fit with the spec's sharding (ZeRO-3 where the spec does not shard and the method allows)."""
    s = plan.spec
    if s.cluster.deepspeed == "none" and s.model.method == "qlora":
        return None  # data parallelism alone never lowers memory per GPU
    sharding = {} if s.cluster.deepspeed != "none" else {"deepspeed": "zero3"}
    n = s.cluster.num_workers + 1
    while n <= MAX_WORKERS:
        what = f"cluster.num_workers: {n}" + (" with cluster.deepspeed: zero3" if sharding else "")
        change = _try(plan, what, {"cluster": {"num_workers": n, **sharding}})
        if change:
            return change
        n = n + 1 if n < 64 else n * 2
    return None


def _combined_changes(plan: Plan) -> list[tuple[str, dict]]:
    """Combinations, for when no single change is enough: the smallest batch shape plus ever heavier sharding,
    then QLoRA."""
    s = plan.spec
    train = {
        "micro_batch_size": 1,
        "gradient_checkpointing": True,
        "gradient_accumulation_steps": s.train.gradient_accumulation_steps * s.train.micro_batch_size,
    }
    base = "train.micro_batch_size: 1 with gradient_checkpointing: true"
    ladder = []
    if s.model.method != "qlora" and s.cluster.num_workers > 1:
        ladder += [
            (", cluster.deepspeed: zero3", {"deepspeed": "zero3"}),
            (", cluster.deepspeed: zero3 with offload_optimizer", {"deepspeed": "zero3", "offload_optimizer": True}),
        ]
    if s.model.method != "qlora":
        ladder.append(
            (
                ", cluster.deepspeed: zero3 with offload_optimizer and offload_params",
                {"deepspeed": "zero3", "offload_optimizer": True, "offload_params": True},
            )
        )
    out = [(base + what, {"train": train, "cluster": cluster}) for what, cluster in ladder]
    qlora = {"model": {"method": "qlora"}, "train": train}
    plain = {"deepspeed": "none", "offload_optimizer": False, "offload_params": False}
    out.append((base + ", model.method: qlora", {**qlora, "cluster": plain}))
    out.append(
        (
            base + ", model.method: qlora with cluster.deepspeed: zero2 and offload_optimizer",
            {**qlora, "cluster": {"deepspeed": "zero2", "offload_optimizer": True, "offload_params": False}},
        )
    )
    return out


def _try(plan: Plan, description: str, changes: dict) -> Change | None:
    """The change if the changed spec is valid and its plan fits the same GPU."""
    try:
        spec = with_changes(plan.spec, changes)
    except (SpecError, ValidationError):
        return None
    changed = plan_with(spec, plan.config, plan.config_source, plan.gpu, plan.price_per_gpu_hour, None)
    return Change(description, changes, changed.memory.total) if changed.fits else None


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"
