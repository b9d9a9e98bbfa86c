"""Speed levers: the spec refuses what the hardware cannot do, each accepted lever changes what the step runs, and
the loss of a tiny model stays where the plain step puts it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import TrainerCallback

from cluster.errors import UserError
from cluster.spec import SpecError, validate_spec
from cluster.training.levers import check_levers, lever_problems
from tests.cluster.training.conftest import tiny_spec
from tests.conftest import REPO


def _spec(tmp_path, model_dir, gpus: int = 0, **sections):
    spec = tiny_spec(model_dir, tmp_path / "runs", "levers", **sections)
    spec["cluster"] = {"num_workers": 1, "gpus_per_worker": gpus, "cpus_per_worker": 1}
    spec["train"].update(eval_steps=None, save_steps=spec["train"]["max_steps"])
    spec["data"]["eval_split"] = 0.0
    return spec


def test_spec_refuses_gpu_levers_on_a_cpu_cluster(tmp_path, tiny_model_dir):
    spec = _spec(tmp_path, tiny_model_dir, train={"liger_kernel": True}, model={"attn_implementation": "flash_attention_2"})
    with pytest.raises(SpecError) as e:
        validate_spec(spec)
    assert "train.liger_kernel: liger-kernel needs a CUDA GPU and the liger-kernel package" in str(e.value)
    assert "model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package" in str(e.value)
    # On a GPU cluster the spec is valid: whether the workers can run it is checked there.
    validate_spec(_spec(tmp_path, tiny_model_dir, gpus=1, train={"liger_kernel": True}))


def test_worker_refuses_levers_it_cannot_run(tmp_path, tiny_model_dir):
    spec = validate_spec(
        _spec(tmp_path, tiny_model_dir, gpus=1, train={"liger_kernel": True}, model={"attn_implementation": "flash_attention_2"})
    )
    with pytest.raises(UserError, match="liger-kernel needs a CUDA GPU.*this worker has no CUDA GPU"):
        check_levers(spec, on_gpu=False)
    problems = lever_problems(spec, on_gpu=False, model_type="llama")
    assert any("flash_attention_2 needs a CUDA GPU and the flash-attn package" in p for p in problems)


def test_liger_refuses_an_architecture_it_lacks(tmp_path, tiny_model_dir):
    pytest.importorskip("liger_kernel")
    spec = validate_spec(_spec(tmp_path, tiny_model_dir, gpus=1, train={"liger_kernel": True}))
    assert lever_problems(spec, on_gpu=True, model_type="llama") == []
    [problem] = lever_problems(spec, on_gpu=True, model_type="gpt_bigcode")
    assert "Liger has no kernels for architecture 'gpt_bigcode'" in problem


def test_liger_lever_patches_the_model_the_trainer_steps(tmp_path, tiny_model_dir):
    """The Trainer that sft_args configures puts Liger's RMSNorm, SwiGLU and RoPE into the model when training starts.
    Liger's Triton kernels cannot run on a CPU (the step fails), so this checks the patching; the loss check is
    test_liger_loss_on_gpu. A fresh
    process, because Liger replaces functions of transformers' Llama module for the whole process."""
    pytest.importorskip("liger_kernel")
    code = textwrap.dedent(f"""
        import warnings; warnings.simplefilter("ignore")
        from pathlib import Path
        from datasets import Dataset
        from transformers.models.llama import modeling_llama
        from trl import SFTTrainer
        from cluster.model.load import load_model, load_tokenizer
        from cluster.spec import validate_spec
        from cluster.training.args import sft_args
        from cluster.training.collator import make_collator
        from tests.cluster.training.test_levers import _spec
        for liger in (False, True):
            spec = validate_spec(_spec(Path({str(tmp_path)!r}), {str(tiny_model_dir)!r}, gpus=1, train={{"liger_kernel": liger}}))
            tok, model = load_tokenizer(spec), load_model(spec)
            args = sft_args(spec, Path({str(tmp_path)!r}) / "hf", None, on_gpu=False, has_eval=False)
            rows = Dataset.from_list([{{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "position_ids": [0, 1, 2]}}])
            trainer = SFTTrainer(
                model=model, args=args, train_dataset=rows, processing_class=tok, data_collator=make_collator(tok)
            )
            try:
                trainer.train()  # the Trainer patches the model as training starts; Triton then fails on a CPU
                error = "none"
            except Exception as e:
                error = type(e).__name__
            layer = model.get_base_model().model.layers[0]
            rope = modeling_llama.apply_rotary_pos_emb.__module__
            print(liger, layer.input_layernorm._get_name(), layer.mlp._get_name(), rope, error)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("True", "False"))]
    assert lines[0] == "False LlamaRMSNorm LlamaMLP transformers.models.llama.modeling_llama none"
    assert lines[1].startswith("True LigerRMSNorm LigerSwiGLUMLP liger_kernel.")
    assert not lines[1].endswith(" none")  # Liger's kernels did not run on this CPU


class Probe(TrainerCallback):
    """What the step ran: the optimizer's fused flag, graphs Dynamo compiled, and the losses."""

    def __init__(self):
        self.fused = None
        self.losses = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        self.fused = bool(inner.defaults.get("fused"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def _train(tmp_path, model_dir, data, name, **train):
    from cluster.training.loop import train_loop

    spec = _spec(tmp_path / name, model_dir, train={"max_steps": 4, **train})
    probe = Probe()
    train_loop(
        {
            "spec": spec,
            "run": str(tmp_path / name / "run"),
            "train_path": data["train_path"],
            "eval_path": None,
            "scratch": str(tmp_path / name / "scratch"),
        },
        callbacks=(probe,),
    )
    return probe


@pytest.fixture(scope="module")
def plain_step(tmp_path_factory, tiny_model_dir, tiny_data):
    return _train(tmp_path_factory.mktemp("plain"), tiny_model_dir, tiny_data, "plain")


def test_fused_adamw_runs_the_fused_kernel_and_keeps_the_loss(tmp_path, tiny_model_dir, tiny_data, plain_step):
    fused = _train(tmp_path, tiny_model_dir, tiny_data, "fused", optimizer="adamw_torch_fused")
    assert fused.fused and not plain_step.fused
    assert fused.losses == pytest.approx(plain_step.losses, abs=1e-4)
    assert fused.losses[-1] < fused.losses[0]


@pytest.mark.slow
def test_torch_compile_compiles_the_model_and_keeps_the_loss(tmp_path, tiny_model_dir, tiny_data, plain_step):
    """Over 60 s: inductor builds each compiled graph's C++ kernels on the CPU (a fresh venv misses its cache)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    # Dynamic shapes from the first step: the packed rows differ in length, so by default Dynamo compiles every graph
    # twice (for the first length, then with dynamic shapes at the second): 50 C++ kernels instead of 30, about 80
    # CPU-s of compiling instead of 60. The same model is compiled and trained, its graphs not specialised to one length.
    with torch._dynamo.config.patch(assume_static_by_default=False):
        compiled = _train(tmp_path, tiny_model_dir, tiny_data, "compiled", torch_compile=True)
    assert counters["stats"]["unique_graphs"] > 0  # the plain step runs eagerly: it compiles nothing
    assert compiled.losses == pytest.approx(plain_step.losses, abs=2e-3)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_liger_loss_on_gpu(tmp_path, tiny_model_dir, tiny_data):
    """On a GPU, the Liger step's losses stay within bf16 noise of the plain step's."""
    pytest.importorskip("liger_kernel")
    code = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from tests.cluster.training.test_levers import _train_gpu
        print("LOSSES", json.dumps(_train_gpu(Path({str(tmp_path)!r}), {str(tiny_model_dir)!r}, {tiny_data!r})))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    plain, liger = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("LOSSES"))[7:])
    assert liger == pytest.approx(plain, abs=2e-2)


def _train_gpu(tmp_path, model_dir, data) -> tuple[list[float], list[float]]:
    """Plain then Liger on one GPU (plain first: Liger's patches are process-wide)."""
    out = []
    for liger in (False, True):
        spec_dir = tmp_path / f"liger-{liger}"
        probe = Probe()
        spec = _spec(spec_dir, model_dir, gpus=1, train={"max_steps": 4, "liger_kernel": liger})
        from cluster.training.loop import train_loop

        train_loop(
            {
                "spec": spec,
                "run": str(spec_dir / "run"),
                "train_path": data["train_path"],
                "eval_path": None,
                "scratch": str(spec_dir / "scratch"),
            },
            callbacks=(probe,),
        )
        out.append(probe.losses)
    return out[0], out[1]
