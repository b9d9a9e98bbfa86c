"""Fixtures for training tests: tokenized datasets in cluster.data's format, and spec dicts for the tiny model."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cluster.embedded import embedded_data_path
from tests.conftest import private_ray


def build_rows(model_dir: Path, n: int, max_len: int, packed: bool) -> list[dict]:
    """FAQ conversations rendered with the chat template; labels only on the answer; packed rows when asked."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    records = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")][:n]
    samples = []
    for r in records:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": r["instruction"]}], add_generation_prompt=True, tokenize=False
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(r["output"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[:max_len]
        samples.append({"input_ids": ids, "labels": ([-100] * len(p_ids) + a_ids)[:max_len]})
    if not packed:
        return samples
    rows, cur = [], {"input_ids": [], "labels": [], "position_ids": []}
    for s in samples:
        if len(cur["input_ids"]) + len(s["input_ids"]) > max_len:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += s["input_ids"]
        cur["labels"] += s["labels"]
        cur["position_ids"] += list(range(len(s["input_ids"])))
    rows.append(cur)
    return rows


def save_rows(rows: list[dict], path: Path) -> str:
    """Save rows like cluster.data does (datasets.save_to_disk)."""
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_data(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Packed train/eval datasets (256-token rows) for the tiny model."""
    root = tmp_path_factory.mktemp("tiny-data")
    rows = build_rows(tiny_model_dir, 200, 256, packed=True)
    return {"train_path": save_rows(rows[4:], root / "train"), "eval_path": save_rows(rows[:4], root / "eval")}


def tiny_spec(model_dir: Path, storage: Path, name: str, **sections) -> dict:
    """A spec dict for the tiny model on 2 CPU workers; `sections` override whole sub-keys of each section."""
    spec = {
        "model": {"base": str(model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256},
        "train": {
            "max_steps": 10,
            "learning_rate": 1e-3,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": 5,
            "save_steps": 5,
            "keep_checkpoints": 2,
        },
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1, "max_failures": 1},
        "output": {"storage": str(storage), "name": name},
    }
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values}
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def ray_local():
    """A private local Ray with 2 CPUs and no dashboard, shut down after this package's tests (others start their own)."""
    import os

    import ray

    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    private_ray(
        num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _node_ip_address="127.0.0.1", address="local"
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="package")
def lora_run(ray_local, tiny_model_dir, tiny_data, tmp_path_factory):
    """An uninterrupted 10-step LoRA run on 2 workers, named sft-a, checkpoints at steps 5 and 10: its spec, run
    folder and Ray's Result. test_ray_training inspects it, resubmits it and compares a faulty run with it;
    test_dpo_runs warm-starts from it (one fit for both)."""
    from cluster.spec import validate_spec
    from cluster.training.trainer import fit

    storage = tmp_path_factory.mktemp("runs")
    spec = tiny_spec(tiny_model_dir, storage, "sft-a")
    result = fit(validate_spec(spec), tiny_data["train_path"], tiny_data["eval_path"])
    return spec, storage / "sft-a", result


@pytest.fixture(scope="package")
def one_process(request, tiny_model_dir, tiny_data, tmp_path_factory) -> dict[str, dict[int, float]]:
    """Per-step losses, by run name, of the one-process baselines that the selected modules of this package declare:
    each module's `one_process_runs(model_dir, data, storage)` returns train_loop configs. They are all trained in one
    fresh process without Ray, one start-up for the package instead of one per module; the runs without DeepSpeed go
    first, before a DeepSpeed run leaves its one-process group initialised."""
    from cluster.spec import validate_spec

    storage = tmp_path_factory.mktemp("one-process")
    here = __name__.rsplit(".", 1)[0] + "."
    modules = {m.__name__: m for item in request.session.items if (m := getattr(item, "module", None)) is not None}
    declared = [
        modules[n].one_process_runs for n in sorted(modules) if n.startswith(here) and hasattr(modules[n], "one_process_runs")
    ]
    configs = [config for runs in declared for config in runs(tiny_model_dir, tiny_data, storage)]
    configs.sort(key=lambda config: validate_spec(config["spec"]).cluster.zero_stage > 0)  # stable: declared order
    run_single_processes(configs, storage)
    return {Path(config["run"]).name: log_losses(Path(config["run"])) for config in configs}


def log_losses(run: Path) -> dict[int, float]:
    """Per-step train loss from the run's log_history.json."""
    history = json.loads((run / "log_history.json").read_text())
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def eval_losses(run: Path) -> list[float]:
    history = json.loads((run / "log_history.json").read_text())
    return [e["eval_loss"] for e in history if "eval_loss" in e]


def run_single_processes(configs: list[dict], tmp: Path, env: dict | None = None, timeout: int = 600) -> None:
    """Several train_loop configs one after another in one fresh Python process without Ray (one start-up for all),
    in `env` (default: this process's)."""
    import subprocess
    import sys

    cfg = tmp / "loop-configs.json"
    cfg.write_text(json.dumps(configs))
    code = (
        "import json,sys; from cluster.training.loop import train_loop\n"
        "for config in json.load(open(sys.argv[1])): train_loop(config)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(cfg)],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
