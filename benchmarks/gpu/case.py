"""One benchmark case, alone in its own process: rayfit's per-worker step, the plain TRL baseline, or the 4-bit merge.

    python -m benchmarks.gpu.case CASE.json     (benchmarks.gpu.__main__ starts these; the result goes to case["out"])

A process per case keeps the peak-memory counter, torch.compile's caches and Liger's patches (which replace
functions of transformers' Llama module for the whole process) from leaking into the next case.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch
from transformers import TrainerCallback

from cluster.errors import UserError

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}  # rayfit's defaults, for both sides


class StepTimer(TrainerCallback):
    """Wall time and trained (non-padding) tokens at the end of every optimizer step; skips the final checkpoint."""

    def __init__(self, keep_final_save: bool = False):
        self.marks: list[tuple[int, float, int]] = []
        self.keep_final_save = keep_final_save

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((state.global_step, time.perf_counter(), state.num_input_tokens_seen))
        if state.global_step >= state.max_steps and not self.keep_final_save:
            control.should_save = False  # the benchmark times steps, not the checkpoint write
        return control

    def rate(self, warmup: int) -> dict:
        """Tokens/s and seconds per step over the steps after `warmup`."""
        (_, t0, n0), (_, t1, n1) = self.marks[warmup - 1], self.marks[-1]
        steps = len(self.marks) - warmup
        return {"tokens_per_s": (n1 - n0) / (t1 - t0), "step_s": (t1 - t0) / steps, "tokens_per_step": (n1 - n0) / steps}


def rayfit_spec(case: dict) -> dict:
    """The job spec of a rayfit case: the defaults, plus the case's levers."""
    model = {"base": case["model_dir"], "method": case["method"], "dtype": "bfloat16", **case["levers"].get("model", {})}
    if case["method"] != "full":
        model["lora"] = LORA
    return {
        "model": model,
        "data": {"train": [{"path": case["data"]["packed"]}], "max_seq_len": case["max_seq_len"], "eval_split": 0.0},
        "train": {
            "max_steps": case["steps"],
            "learning_rate": 1e-4,
            "warmup_steps": 0,
            "logging_steps": 1,
            "eval_steps": None,
            "save_steps": case["steps"],
            "micro_batch_size": case["micro_batch_size"],
            **case["levers"].get("train", {}),
        },
        "cluster": {
            "num_workers": 1,
            "gpus_per_worker": 1 if case["on_gpu"] else 0,
            "cpus_per_worker": 1,
            **case["levers"].get("cluster", {}),
        },
        "output": {"storage": str(Path(case["work"]) / "runs"), "name": run_name(case)},
    }


def run_name(case: dict) -> str:
    """The case's name as a valid output.name."""
    return case["name"].replace("+", ".")


def run_rayfit(case: dict, keep_final_save: bool = False) -> tuple[dict, StepTimer]:
    """rayfit's real per-worker step: `train_loop` on the prepared (packed) rows, no Ray."""
    from cluster.spec import validate_spec
    from cluster.training.loop import train_loop

    spec = rayfit_spec(case)
    validate_spec(spec)  # refusals surface here, as they would at submit
    run = Path(case["work"]) / "runs" / run_name(case)
    shutil.rmtree(run, ignore_errors=True)  # train_loop resumes from what a run folder holds; every case starts fresh
    timer = StepTimer(keep_final_save)
    out = train_loop(
        {
            "spec": spec,
            "run": str(run),
            "train_path": case["data"]["packed"],
            "eval_path": None,
            "scratch": str(Path(case["work"]) / "scratch" / case["name"]),
        },
        callbacks=(timer,),
    )
    return {"log_history": out["log_history"], "run": str(run), "spec": spec}, timer


def run_baseline(case: dict) -> tuple[dict, StepTimer]:
    """Plain transformers + PEFT (+ bitsandbytes) through TRL's SFTTrainer with its defaults: padded batches of
    unpacked samples. Only what a run needs is set (steps, logging, no saving, CPU float32 on a CPU)."""
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    on_gpu = case["on_gpu"]
    init = {"dtype": torch.bfloat16 if on_gpu else torch.float32}
    if case["method"] == "qlora":
        init["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if on_gpu else torch.float32,
        )
        init["device_map"] = {"": 0} if on_gpu else "cpu"
    args = SFTConfig(
        output_dir=str(Path(case["work"]) / "scratch" / case["name"]),
        max_steps=case["steps"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu,
        include_num_input_tokens_seen="non_padding",
        model_init_kwargs=init,
    )
    peft = (
        None
        if case["method"] == "full"
        else LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        )
    )
    timer = StepTimer()
    trainer = SFTTrainer(
        model=case["model_dir"],
        args=args,
        train_dataset=load_from_disk(case["data"]["plain"]),
        peft_config=peft,
        callbacks=[timer],
    )
    trainer.train()
    return {
        "log_history": trainer.state.log_history,
        "optim": getattr(args.optim, "value", args.optim),
        "batch_size": args.per_device_train_batch_size,
    }, timer


def predicted_bytes(spec: dict, on_gpu: bool) -> int:
    """The planner's prediction of max_memory_allocated for the same spec on this GPU (float32 sizes on a CPU)."""
    from cluster.planner import make_plan
    from cluster.spec import validate_spec

    gpu = torch.cuda.get_device_name() if on_gpu else None
    return make_plan(validate_spec(spec), gpu=gpu).memory.allocated


def merge_check(case: dict) -> dict:
    """QLoRA trained by train_loop, merged by cluster.merge, then the export's logits against 4-bit base + adapter."""
    from transformers import AutoModelForCausalLM

    from cluster.merge import find_checkpoint, merge_checkpoint
    from cluster.merge.weights import spec_as_trained
    from cluster.model.load import DTYPES, load_adapter, load_quantized_base
    from cluster.run_folder import local_copy

    out, _ = run_rayfit(case, keep_final_save=True)
    ckpt, manifest = find_checkpoint(out["run"])
    started = time.perf_counter()
    export = merge_checkpoint(out["run"])
    merge_s = time.perf_counter() - started
    spec = spec_as_trained(manifest)
    device = "cuda" if case["on_gpu"] else "cpu"
    ids = torch.randint(3, spec_vocab(case), (2, 64), generator=torch.Generator().manual_seed(1)).to(device)
    model = load_adapter(load_quantized_base(spec, DTYPES[spec.model.dtype]), local_copy(ckpt))
    expected = model(input_ids=ids).logits.detach().float()  # grad enabled: the path training used
    del model
    merged = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).to(device)
    with torch.no_grad():
        logits = merged(input_ids=ids).logits.float()
    return {
        "max_abs_logit_diff": (logits - expected).abs().max().item(),
        "top1_agree": (logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
        "logit_scale": expected.abs().max().item(),
        "merge_s": merge_s,
    }


def spec_vocab(case: dict) -> int:
    """Vocabulary size of the case's shape (random ids are drawn below it)."""
    from benchmarks.gpu.setup import SHAPES

    return SHAPES[case["shape"]]["vocab_size"]


def run_case(case: dict) -> dict:
    """Run one case and describe it: throughput, peak and predicted memory, first and last loss; or why it could not."""
    on_gpu = case["on_gpu"]
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    result = {"name": case["name"], "kind": case["kind"], "shape": case["shape"], "method": case["method"]}
    try:
        if case["kind"] == "merge":
            return {**result, **merge_check(case)}
        if case["kind"] == "baseline":
            out, timer = run_baseline(case)
        else:
            out, timer = run_rayfit(case)
            result["predicted_bytes"] = predicted_bytes(out["spec"], on_gpu)
    except UserError as e:  # a lever this machine cannot run: the refusal is the result
        return {**result, "refused": str(e).splitlines()[-1].strip().removeprefix("- ")}
    except Exception as e:  # noqa: BLE001 - one failing case must not lose the others' numbers
        traceback.print_exc()
        return {**result, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    losses = [e["loss"] for e in out["log_history"] if "loss" in e]
    result.update(
        timer.rate(case["warmup"]),
        loss_first=losses[0],
        loss_last=losses[-1],
        peak_bytes=torch.cuda.max_memory_allocated() if on_gpu else None,
        **{k: out[k] for k in ("optim", "batch_size") if k in out},
    )
    return result


def main() -> None:
    """Read the case, run it, write the result where the case says."""
    case = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run_case(case)
    Path(case["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
