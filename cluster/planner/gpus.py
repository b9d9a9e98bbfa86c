"""GPUs the planner knows: usable memory and dense bf16 peak, and how their names are spelled by Ray and CUDA."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cluster.errors import UserError

GiB = 1024**3


@dataclass(frozen=True)
class Gpu:
    """One GPU model: `memory` is what CUDA reports as total_memory (bytes); `bf16_flops` is the dense peak."""

    name: str
    memory: int
    bf16_flops: float
    aliases: tuple[str, ...] = ()
    memory_bandwidth: float = 0.0  # bytes/s (data sheet); decoding one token reads every weight once


# Memory is the usable total CUDA reports, a little under the marketing number (ECC and firmware take the rest).
# Peaks are dense (no sparsity) bf16 tensor-core figures, bandwidths HBM/GDDR figures, from the vendor data sheets.
GPUS = (
    Gpu(
        "H100-80GB", int(79.1 * GiB), 989e12, ("H100", "H100-SXM", "H100-80G", "NVIDIA H100 80GB HBM3"), memory_bandwidth=3.35e12
    ),
    Gpu("H100-PCIE-80GB", int(79.1 * GiB), 756e12, ("H100-PCIE", "NVIDIA H100 PCIe"), memory_bandwidth=2e12),
    Gpu("H200-141GB", int(139.8 * GiB), 989e12, ("H200", "NVIDIA H200"), memory_bandwidth=4.8e12),
    Gpu("B200-180GB", int(178.4 * GiB), 2250e12, ("B200", "NVIDIA B200"), memory_bandwidth=8e12),
    Gpu(
        "A100-80GB",
        int(79.1 * GiB),
        312e12,
        ("A100-80G", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"),
        memory_bandwidth=2.039e12,
    ),
    Gpu(
        "A100-40GB",
        int(39.4 * GiB),
        312e12,
        ("A100-40G", "A100", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"),
        memory_bandwidth=1.555e12,
    ),
    Gpu("L40S-48GB", int(44.4 * GiB), 362e12, ("L40S", "NVIDIA L40S"), memory_bandwidth=8.64e11),
    Gpu("A6000-48GB", int(47.4 * GiB), 155e12, ("A6000", "RTX-A6000", "NVIDIA RTX A6000"), memory_bandwidth=7.68e11),
    Gpu("L4-24GB", int(22.0 * GiB), 121e12, ("L4", "NVIDIA L4"), memory_bandwidth=3e11),
    Gpu("A10G-24GB", int(22.0 * GiB), 70e12, ("A10G", "NVIDIA A10G"), memory_bandwidth=6e11),
    Gpu("RTX4090-24GB", int(23.6 * GiB), 165e12, ("RTX4090", "4090", "NVIDIA GeForce RTX 4090"), memory_bandwidth=1.008e12),
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().removeprefix("accelerator_type:"))


_INDEX = {_key(n): g for g in GPUS for n in (g.name, *g.aliases)}


def known_gpu(name: str) -> bool:
    """Whether `name` is a GPU the planner knows (by any of its spellings)."""
    return _key(name) in _INDEX


def find_gpu(name: str) -> Gpu:
    """The GPU named `name` (e.g. H100-80GB, Ray's A100-80G, or CUDA's device name); UserError lists the known ones."""
    gpu = _INDEX.get(_key(name))
    if gpu is None:
        raise UserError(f"unknown GPU {name!r}. Fix: use one of {', '.join(g.name for g in GPUS)} (--gpu or plan.gpu).")
    return gpu


def gpu_from_cluster_resources(resources: dict[str, float]) -> str | None:
    """The GPU model of a Ray cluster from `ray.cluster_resources()` (its `accelerator_type:X` keys), if known."""
    for key in sorted(resources):
        if key.startswith("accelerator_type:") and _key(key) in _INDEX:
            return _INDEX[_key(key)].name
    return None
