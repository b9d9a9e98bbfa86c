"""The few collectives the worker loop and its callbacks use; each is a no-op for one process without a group."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank."""
    if _grouped():
        dist.barrier()


def gather_objects(item: Any) -> list[Any]:
    """`item` from every rank, in rank order (a one-element list without a process group)."""
    if not _grouped():
        return [item]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, item)
    return out


def from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not _grouped():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on some rank (an object collective: works on gloo and NCCL alike)."""
    return any(gather_objects(flag))


def rank() -> int:
    """This process's rank in the group (0 without one)."""
    return dist.get_rank() if _grouped() else 0
