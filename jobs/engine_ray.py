"""Joining Ray for the entrypoints that run vLLM engines (`rayfit generate`, `rayfit evaluate`, `rayfit data pairs`):
the cluster at RAY_ADDRESS (inside `ray job submit`) or --address, else a private local Ray for this run."""

from __future__ import annotations

import os


def connect(address: str | None) -> None:
    """Join the cluster at `address`, else start a local Ray (no dashboard) for this process.

    A local Ray gets at least 3 logical CPUs: an engine's bundle, the chat-template stage and Ray Data's own tasks
    must be schedulable together even on a 2-core machine (the engine pins its threads itself).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if address and address != "local":
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=max(3, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
        )
