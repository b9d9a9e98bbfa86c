"""A spec builder for planner tests: one line per scenario."""

from __future__ import annotations

import pytest

from cluster.spec import validate_spec


@pytest.fixture
def spec():
    def build(
        base: str,
        method: str = "lora",
        seq: int = 512,
        mb: int = 1,
        r: int = 16,
        workers: int = 1,
        sharding: str = "ddp",
        offload: bool = False,
        checkpointing: bool = True,
        **plan,
    ):
        data = {
            "model": {"base": base, "method": method, "dtype": "bfloat16"},
            "data": {"train": [{"path": "train.jsonl"}], "max_seq_len": seq},
            "train": {"micro_batch_size": mb, "gradient_checkpointing": checkpointing},
            "cluster": {"num_workers": workers, "sharding": sharding, "offload_optimizer": offload},
            "output": {"name": "plan-test"},
            "plan": plan,
        }
        if method != "full":
            data["model"]["lora"] = {"r": r, "alpha": 16, "target_modules": "all-linear"}
        return validate_spec(data)

    return build
