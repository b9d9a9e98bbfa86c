"""Sampling in the workers past train.grpo.generation_timeout_s stops the run with a named error (one process, no
Ray: the bound is the trainer's own)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.spec import validate_spec
from tests.cluster.objectives.conftest import grpo_spec, write_prompts
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_in_worker_sampling_past_its_bound_stops_by_name(grpo_model_dir, tmp_path):
    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.training.trainer import loop_config

    spec = validate_spec(
        grpo_spec(
            grpo_model_dir,
            tmp_path,
            "bound",
            write_prompts(tmp_path / "p.jsonl", 16),
            cluster={"num_workers": 1},
            train={"micro_batch_size": 4},
            grpo={"max_completion_length": 64, "generation_timeout_s": 0.01},
        )
    )
    data = prepare_datasets(spec, load_tokenizer(spec), str(tmp_path / "data"))
    (tmp_path / "loop.json").write_text(json.dumps(loop_config(spec, data.train_path, None)))
    code = "import json,sys; from cluster.training.loop import train_loop; train_loop(json.load(open(sys.argv[1])))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "loop.json")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "RolloutTimeout: sampling the answers of step 1 in the workers took" in proc.stderr
    assert "the bound is train.grpo.generation_timeout_s 0.01 s" in proc.stderr
