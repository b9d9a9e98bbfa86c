"""GRPO fixtures: a tiny model a LoRA can steer, prompts with a reference field, and a spec for them.

The task: answers score the share of their characters that are the row's `letter` (a python grader reading
{{item.letter}}), plus whether the letter appears at all (string_check). A random tiny Llama answers with
arbitrary tokens, and GRPO raises the share within a few dozen steps at a high learning rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LETTER_SHARE = "def grade(sample, item):\n    t = sample['output_text']\n    return t.count(item['letter']) / max(1, len(t))\n"
GRADERS = [
    {"type": "python", "name": "share", "source": LETTER_SHARE},
    {
        "type": "string_check",
        "name": "has",
        "input": "{{sample.output_text}}",
        "reference": "{{item.letter}}",
        "operation": "like",
    },
]


@pytest.fixture(scope="session")
def grpo_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama with weights drawn at std 0.2: at the usual 0.02 no LoRA can make a token likely (tiny_model.py)."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-grpo"), init_std=0.2)


def write_prompts(path: Path, n: int = 64) -> Path:
    """`n` TRL prompt rows, each with the letter its answers are rewarded for."""
    path.write_text("".join(json.dumps({"prompt": f"Write about item {i}.", "letter": "e"}) + "\n" for i in range(n)))
    return path


def grpo_spec(model_dir: Path, storage: Path, name: str, data: Path, **sections) -> dict:
    """A GRPO spec for the tiny model on 2 CPU workers; `sections` override sub-keys of each section (and of grpo)."""
    spec = {
        "model": {"base": str(model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [{"path": str(data)}], "eval_split": 0.125, "max_seq_len": 128},
        "train": {
            "objective": "grpo",
            "max_steps": 30,
            "learning_rate": 2e-2,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
            "micro_batch_size": 4,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": None,
            "save_steps": 10,
            "grpo": {"num_generations": 4, "max_completion_length": 8, "graders": GRADERS, "weights": [0.8, 0.2]},
        },
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1, "max_failures": 0},
        "output": {"storage": str(storage), "name": name},
        "evaluate": {"max_new_tokens": 8, "gate_metric": "reward", "max_regression": 0.0},
    }
    for section, values in sections.items():
        if section == "grpo":
            spec["train"]["grpo"] = {**spec["train"]["grpo"], **values}
        else:
            spec[section] = {**spec.get(section, {}), **values}
    return spec


def rewards(log_history: list[dict]) -> dict[int, float]:
    """Mean reward by step."""
    return {e["step"]: e["reward"] for e in log_history if "reward" in e}
