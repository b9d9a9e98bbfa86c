"""What each rank holds of the model, measured on the workers of a sharded run (ZeRO-3 partitions, FSDP2 DTensors)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

from transformers import TrainerCallback


def held_bytes(param) -> int:
    """Bytes of `param` this rank keeps: its ZeRO-3 partition, its FSDP2 local shard, or the whole tensor."""
    from torch.distributed.tensor import DTensor

    if hasattr(param, "ds_tensor"):
        return param.ds_tensor.numel() * param.ds_tensor.element_size()
    local = param.to_local() if isinstance(param, DTensor) else param
    return local.numel() * local.element_size()


def gathered_bytes(param) -> int:
    """Bytes of a ZeRO-3 parameter that are whole on this rank right now (0 once released)."""
    return param.data.numel() * param.data.element_size() if hasattr(param, "ds_tensor") else 0


class ShardProbe(TrainerCallback):
    """At the start of training (the model already wrapped and sharded) and after every step: the bytes this rank
    holds of the 4-bit weights and of all parameters, and its peak RSS; written as JSON after each (a run that is
    made to fail keeps what it measured)."""

    def __init__(self, out: Path, rank: int):
        self.out, self.rank, self.seen = out, rank, []

    def _measure(self, model) -> dict:
        import bitsandbytes as bnb

        four_bit = [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        return {
            "four_bit_held": sum(held_bytes(p) for p in four_bit),
            "four_bit_gathered": sum(gathered_bytes(p) for p in four_bit),
            "params_held": sum(held_bytes(p) for p in model.parameters()),
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._record(model)

    def _record(self, model) -> None:
        self.seen.append(self._measure(model))
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{self.rank}.json").write_text(json.dumps(self.seen))


def probed_loop(config: dict) -> dict:
    """`train_loop` with a ShardProbe writing to {run}/probe (the run folder is local in tests)."""
    import ray.train

    from cluster.training.loop import train_loop

    rank = ray.train.get_context().get_world_rank()
    return train_loop(config, callbacks=(ShardProbe(Path(config["run"]) / "probe", rank),))


def probes(run: Path) -> list[list[dict]]:
    """Every rank's measurements, rank 0 first."""
    return [json.loads(p.read_text()) for p in sorted((run / "probe").glob("rank*.json"))]
