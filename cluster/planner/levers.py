"""The memory levers the planner knows, what each costs, and the search for the cheapest set that fits.

Each lever is a spec change with a cost: what it takes from speed (recomputation, copies to host RAM, more
communication), from money (more GPUs) or from what is trained (another method). Single levers are tried first, in
order of cost; when none fits alone, every combination is tried in order of its summed cost, so the planner never
says that nothing fits while some combination of its own levers does. Liger's fused cross-entropy is not among them:
TRL 1.16 already computes every loss with its own chunked LM head and refuses Liger's (cluster/planner/memory.py,
fused_head_bytes), so the planner counts the chunked head for every run. The costs rank, they do not predict time:

    micro-batch smaller, same batch by accumulation    1   smaller matmuls
    gradient checkpointing                             2   one more forward per layer
    activation offload (train.activation_offloading)  2   copies to host RAM on a side stream, overlapped (GPU only)
    ZeRO-2 / ZeRO-3 / FSDP2                            2-3 gathers and reduce-scatters
    more GPUs (at most 16 times as many)               4 + log2(factor): 5 for twice as many
    optimizer / parameter offload                      6-7 CPU Adam, host-device copies every step
    QLoRA instead of LoRA, LoRA instead of full        10  changes what is trained
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from pydantic import ValidationError

from cluster.planner.gpus import GiB
from cluster.planner.memory import memory
from cluster.planner.params import count_params
from cluster.planner.plan import Plan, with_changes
from cluster.sharding import SHARDINGS
from cluster.spec.base import SpecError
from cluster.spec.job import JobSpec

MAX_WORKERS = 1024
MAX_FACTOR = 16  # more GPUs than 16 times the spec's is no longer a change to the same job
WORKERS_COST = 4  # plus log2 of the factor: twice the GPUs costs 5


@dataclass(frozen=True)
class Change:
    """One change to a spec that the planner says fits: what to set, and the per-GPU total it gives."""

    description: str
    changes: dict[str, dict]
    total: int


@dataclass(frozen=True)
class Lever:
    """One setting that lowers memory per GPU: its cost rank, how it reads, and the spec sections it sets."""

    cost: int
    description: str
    changes: dict[str, dict]


def suggest_changes(plan: Plan, limit: int = 4) -> list[Change]:
    """Up to `limit` changes that make `plan` fit, cheapest first: single levers, combinations of levers and more
    GPUs, ranked together by cost (of smaller micro-batches alone, only the largest that fits); when none fits,
    more GPUs with every lever on; [] when nothing fits at all."""
    levers = _levers(plan)
    candidates = [(lever.cost, [lever]) for lever in levers] + _combinations(levers, plan)
    more = _more_workers(plan, [])
    if more:
        candidates.append((_workers_cost(plan, more), more))
    candidates.sort(key=lambda item: (item[0], isinstance(item[1], list) and len(item[1])))  # stable within a cost
    found: list[Change] = []
    for _, pick in candidates:
        if isinstance(pick, Change):
            found.append(pick)
        elif not (len(pick) == 1 and _kind(pick[0]) == "batch" and any(_is_batch(c) for c in found)):
            description = ", ".join(lever.description for lever in pick)
            change = _try(plan, description, _merged([lever.changes for lever in pick]))
            if change:
                found.append(change)
        if len(found) == limit:
            break
    if found:
        return found
    heaviest = {_kind(lv): lv for lv in sorted(levers, key=lambda lever: lever.cost)}  # the last of each kind
    every = _compatible([lv for kind, lv in heaviest.items() if kind not in ("batch", "method")])
    more = _more_workers(plan, [_smallest_batch(plan), *every] if plan.spec.train.micro_batch_size > 1 else every)
    return [more] if more else []


def _workers_cost(plan: Plan, change: Change) -> float:
    """More GPUs: a base cost plus log2 of the factor (twice the GPUs costs one more than the same GPUs' levers)."""
    return WORKERS_COST + math.log2(change.changes["cluster"]["num_workers"] / plan.spec.cluster.num_workers)


def _is_batch(change: Change) -> bool:
    return "micro_batch_size" in change.changes.get("train", {}) and len(change.changes) == 1


def _levers(plan: Plan) -> list[Lever]:
    """Every lever that applies to the spec as it is."""
    s = plan.spec
    t, c, m = s.train, s.cluster, s.model
    out = []
    mb = t.micro_batch_size // 2
    while mb >= 1:
        ga = t.gradient_accumulation_steps * t.micro_batch_size // mb
        out.append(
            Lever(
                1,
                f"train.micro_batch_size: {mb} with gradient_accumulation_steps: {ga} (same batch)",
                {"train": {"micro_batch_size": mb, "gradient_accumulation_steps": ga}},
            )
        )
        mb //= 2
    if not t.gradient_checkpointing:
        out.append(Lever(2, "train.gradient_checkpointing: true", {"train": {"gradient_checkpointing": True}}))
    backend = SHARDINGS[c.sharding]
    if c.num_workers > 1 and not backend.shards_states:
        out.append(Lever(2, "cluster.sharding: deepspeed_zero2", {"cluster": {"sharding": "deepspeed_zero2"}}))
    if c.num_workers > 1 and not backend.shards_weights:
        out.append(Lever(3, "cluster.sharding: deepspeed_zero3", {"cluster": {"sharding": "deepspeed_zero3"}}))
        out.append(Lever(3, "cluster.sharding: fsdp2", {"cluster": {"sharding": "fsdp2"}}))
    if not t.activation_offloading and c.use_gpu:
        out.append(Lever(2, "train.activation_offloading: true", {"train": {"activation_offloading": True}}))
    if not c.offload_optimizer:
        sharding = c.sharding if backend.shards_states else "deepspeed_zero2"
        both = sharding == "fsdp2"  # FSDP2 offloads parameters and optimizer states together
        out.append(
            Lever(
                7 if both else 6,
                f"cluster.sharding: {sharding} with offload_optimizer: true" + (" and offload_params: true" if both else ""),
                {"cluster": {"sharding": sharding, "offload_optimizer": True, **({"offload_params": True} if both else {})}},
            )
        )
    if not c.offload_params and c.sharding != "fsdp2":
        out.append(
            Lever(
                7,
                "cluster.sharding: deepspeed_zero3 with offload_optimizer: true and offload_params: true",
                {"cluster": {"sharding": "deepspeed_zero3", "offload_optimizer": True, "offload_params": True}},
            )
        )
    if m.method == "full":
        out.append(Lever(10, "model.method: lora", {"model": {"method": "lora"}}))
    if m.method != "qlora":
        out.append(Lever(10, "model.method: qlora", {"model": {"method": "qlora"}}))
    return out


def _combinations(levers: list[Lever], plan: Plan) -> list[tuple[int, list[Lever]]]:
    """Every set of two or more levers that can go together (one per kind), with its summed cost."""
    kinds: dict[str, list[Lever]] = {}
    for lever in levers:
        kinds.setdefault(_kind(lever), []).append(lever)
    batch = [_smallest_batch(plan)] if plan.spec.train.micro_batch_size > 1 else []
    if batch:
        kinds["batch"] = batch
    axes = [[None, *options] for options in kinds.values()]
    out = []
    for pick in itertools.product(*axes):
        chosen = [lever for lever in pick if lever is not None]
        if len(chosen) >= 2 and _compatible(chosen) == chosen:
            out.append((sum(lv.cost for lv in chosen), chosen))
    return out


def _kind(lever: Lever) -> str:
    """Levers of one kind exclude each other: one sharding, one offload setting, one method, one batch shape."""
    keys = {f"{section}.{key}" for section, fields in lever.changes.items() for key in fields}
    if "cluster.offload_optimizer" in keys or "cluster.offload_params" in keys:
        return "offload"
    if "cluster.sharding" in keys:
        return "sharding"
    if "model.method" in keys:
        return "method"
    if "train.micro_batch_size" in keys:
        return "batch"
    return next(iter(keys))


def _compatible(levers: list[Lever]) -> list[Lever]:
    """`levers` without a sharding choice that an offload lever already makes (it sets its own sharding)."""
    offload = [lv for lv in levers if _kind(lv) == "offload"]
    if not offload:
        return levers
    return [lv for lv in levers if _kind(lv) != "sharding"]


def _smallest_batch(plan: Plan) -> Lever:
    t = plan.spec.train
    ga = t.gradient_accumulation_steps * t.micro_batch_size
    return Lever(
        1,
        f"train.micro_batch_size: 1 with gradient_accumulation_steps: {ga} (same batch)",
        {"train": {"micro_batch_size": 1, "gradient_accumulation_steps": ga}},
    )


def _merged(changes: list[dict[str, dict]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for change in changes:
        for section, fields in change.items():
            out[section] = {**out.get(section, {}), **fields}
    return out


def _more_workers(plan: Plan, levers: list[Lever]) -> Change | None:
    """The fewest GPUs that fit with `levers` and sharded weights (data parallelism alone never lowers memory per
    GPU: ZeRO-3 where the spec does not shard weights)."""
    s = plan.spec
    sets = _merged([lv.changes for lv in levers])
    sharding = (
        {}
        if SHARDINGS[sets.get("cluster", {}).get("sharding", s.cluster.sharding)].shards_weights
        else {"sharding": "deepspeed_zero3"}
    )
    extra = ", ".join(lv.description for lv in levers)
    n = s.cluster.num_workers + 1
    while n <= min(MAX_WORKERS, MAX_FACTOR * s.cluster.num_workers):
        what = f"cluster.num_workers: {n}" + (" with cluster.sharding: deepspeed_zero3" if sharding else "")
        what += f", {extra}" if extra else ""
        changes = _merged([sets, {"cluster": {"num_workers": n, **sharding}}])
        change = _try(plan, what, changes)
        if change:
            return change
        n = n + 1 if n < 64 else n * 2
    return None


def _try(plan: Plan, description: str, changes: dict) -> Change | None:
    """The change if the changed spec is valid, fits the same GPU and stays within the plan's host RAM."""
    try:
        spec = with_changes(plan.spec, changes)
    except (SpecError, ValidationError):
        return None
    mem = memory(spec, plan.config, count_params(plan.config, spec.model))
    fits = mem.total <= plan.gpu.memory * (1 - spec.plan.headroom) and not host_ram_shortfall(spec, mem)
    return Change(description, changes, mem.total) if fits else None


def host_ram_shortfall(spec: JobSpec, mem) -> int:
    """Bytes of host RAM per worker that offload and loading need beyond plan.host_ram_per_worker_gib (0 when they
    fit or it is not set)."""
    limit = spec.plan.host_ram_per_worker_gib
    if limit is None:
        return 0
    return max(0, mem.host_offload + mem.host_load - int(limit * GiB))
