"""rayfit's per-worker step on one GPU, without Ray: throughput, MFU and peak memory against a plain TRL baseline.

    python -m benchmarks.gpu [--out results.json] [--budget-s 330]   # one GPU: 8B LoRA/QLoRA, 1B full, 4-bit merge
    python -m benchmarks.gpu --smoke                                 # the same code on CPU at a tiny shape (CI)

Every case runs in its own process (benchmarks/gpu/case.py). Read benchmarks/gpu/README.md for what each column
means, the FLOPs formula and the wheels the GPU machine needs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.gpu.report import format_table
from benchmarks.gpu.setup import build_model, flops_per_token, sample_lengths, write_data

REPO = Path(__file__).resolve().parents[2]
SHARDED = ("zero3", "fsdp2")  # levers that set cluster.sharding
# (method, shape) groups: LoRA and QLoRA on the 8B shape, a full fine-tune of the 1B shape.
GPU_RUN = {
    "shapes": {"lora": "llama-3.1-8b", "qlora": "llama-3.1-8b", "full": "llama-3.2-1b"},
    "merge_shape": "llama-3.2-1b",
    "lengths": (128, 1024),
    "samples": 200,
    "max_seq_len": 4096,
    "micro_batch_size": 1,
    "warmup": 3,
    "steps": 13,
}
SMOKE_RUN = {
    "shapes": {"lora": "tiny", "qlora": "tiny", "full": "tiny"},
    "merge_shape": "tiny",
    "lengths": (16, 64),
    "samples": 64,
    "max_seq_len": 128,
    "micro_batch_size": 1,
    "warmup": 1,
    "steps": 3,
}


def levers() -> dict[str, dict]:
    """Each lever alone, and all together; "all" takes flash-attention 2 only where flash-attn is installed."""
    flash = importlib.util.find_spec("flash_attn") is not None
    best_attention = {"model": {"attn_implementation": "flash_attention_2"}} if flash else {}
    return {
        "liger": {"train": {"liger_kernel": True}},
        "fused-adamw": {"train": {"optimizer": "adamw_torch_fused"}},
        "flash-attn": {"model": {"attn_implementation": "flash_attention_2"}},
        "compile": {"train": {"torch_compile": True}},
        # The sharded load and step on one GPU: the whole process group is this one rank, so what is measured is
        # the backend's own cost (gathers, partitioned optimizer, the 4-bit base in bf16 storage) against the planner.
        "zero3": {"cluster": {"sharding": "deepspeed_zero3"}},
        "fsdp2": {"cluster": {"sharding": "fsdp2"}},
        "all": {"train": {"liger_kernel": True, "optimizer": "adamw_torch_fused"}, **best_attention},
    }


def plan_cases(run: dict, on_gpu: bool, work: Path, models: dict, data: dict) -> list[dict]:
    """Cases in the order they run: the headline comparisons first, so a time budget cuts the optional ones."""
    lever_sets = levers()

    def case(kind: str, method: str, lever: str | None = None) -> dict:
        shape = run["merge_shape"] if kind == "merge" else run["shapes"][method]
        name = f"{method}-{kind}" + (f"+{lever}" if lever else "")
        return {
            "name": name,
            "kind": kind,
            "method": method,
            "shape": shape,
            "model_dir": str(models[shape]),
            "data": data[shape],
            "levers": lever_sets.get(lever, {}),
            "lever": lever,
            "on_gpu": on_gpu,
            "work": str(work),
            "max_seq_len": run["max_seq_len"],
            "micro_batch_size": run["micro_batch_size"],
            "steps": run["steps"],
            "warmup": run["warmup"],
            "out": str(work / "results" / f"{name}.json"),
        }

    head = [case(k, m) for m in ("lora", "qlora", "full") for k in ("baseline", "rayfit")]
    head.insert(2, case("rayfit", "lora", "all"))
    head += [case("rayfit", "qlora", "zero3"), case("rayfit", "qlora", "fsdp2")]
    rest = [
        case("merge", "qlora"),
        *(case("rayfit", "lora", lv) for lv in ("liger", "fused-adamw", "flash-attn")),
        case("rayfit", "qlora", "all"),
        case("rayfit", "full", "all"),
        case("rayfit", "lora", "compile"),
    ]
    return head + rest


def run_case(case: dict, timeout: float, isolate: bool) -> dict:
    """Run one case in a fresh process (or in this one, for the smoke run); its result, or what stopped it. A sharded
    case always gets its own process: it starts a process group, which must not outlive it into the next case."""
    if not isolate and case["lever"] not in SHARDED:
        from benchmarks.gpu import case as one_case

        started = time.perf_counter()
        return {**one_case.run_case(case), "wall_s": time.perf_counter() - started}
    path = Path(case["out"]).with_suffix(".case.json")
    path.write_text(json.dumps(case))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.gpu.case", str(path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"name": case["name"], "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    if not Path(case["out"]).exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"name": case["name"], "error": f"exit {proc.returncode}: {tail[0][:300]}", "wall_s": wall}
    return {**json.loads(Path(case["out"]).read_text()), "wall_s": wall}


def main() -> None:
    """Build the models and data, run the cases within the budget, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (what CI runs)")
    p.add_argument("--out", default="gpu-benchmark.json", help="JSON file for every case's numbers")
    p.add_argument("--work", default=None, help="folder for models, data and runs (default: a temporary one)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="start no case after this many seconds (with the case timeout: under 8 minutes in all)",
    )
    p.add_argument("--case-timeout-s", type=float, default=150.0, help="stop a case that runs longer")
    p.add_argument("--only", nargs="*", default=None, help="run only cases whose name starts with one of these")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a process per case (default on a GPU: clean peak memory, Liger patches and compile caches; "
        "the smoke run shares one process, since a process start costs more than a tiny case)",
    )
    args = p.parse_args()
    started = time.perf_counter()
    on_gpu = torch.cuda.is_available() and not args.smoke
    run = SMOKE_RUN if args.smoke else GPU_RUN
    isolate = on_gpu if args.isolate is None else args.isolate
    if not args.smoke and not on_gpu:
        sys.exit("benchmarks.gpu: no CUDA GPU here. Run with --smoke for the CPU version.")
    work = Path(args.work or tempfile.mkdtemp(prefix="rayfit-gpu-bench-"))
    (work / "results").mkdir(parents=True, exist_ok=True)
    shapes = sorted({*run["shapes"].values(), run["merge_shape"]})
    lengths = sample_lengths(run["samples"], *run["lengths"])
    models = {s: build_model(s, work / "models" / s, on_gpu) for s in shapes}
    data = {s: write_data(work / "data" / s, s, lengths, run["max_seq_len"]) for s in shapes}
    print(f"[bench] models and data ready in {time.perf_counter() - started:.0f} s under {work}", flush=True)
    results = []
    for case in plan_cases(run, on_gpu, work, models, data):
        if args.only and not any(case["name"].startswith(o) for o in args.only):
            continue
        if case["lever"] == "compile" and not on_gpu:  # inductor compiles C++ on a CPU: minutes, not seconds
            results.append({"name": case["name"], "method": "lora", "skipped": "not on CPU (the tests compile a tiny model)"})
            continue
        if time.perf_counter() - started > args.budget_s:
            results.append({"name": case["name"], "skipped": f"time budget of {args.budget_s:.0f} s spent"})
            continue
        results.append(
            {
                **run_case(case, args.case_timeout_s, isolate),
                "shape": case["shape"],
                "method": case["method"],
                "kind": case["kind"],
                "lever": case["lever"],
            }
        )
        print(f"[bench] {json.dumps(results[-1])}", flush=True)
    device = torch.cuda.get_device_name() if on_gpu else "CPU (smoke: tiny shapes, float32)"
    flops = {m: flops_per_token(s, m, lengths) for m, s in run["shapes"].items()}
    print(format_table(results, device, flops, on_gpu))
    from benchmarks.results import write_results

    # A CPU smoke run (CI's test) writes its results file beside --out, not over the committed ones.
    where = None if on_gpu else Path(args.out).resolve().parent
    write_results(
        "gpu" if on_gpu else "gpu-smoke", runs=results, summary={"device": device, "flops_per_token": flops}, directory=where
    )
    total = time.perf_counter() - started
    print(f"\n[bench] {len(results)} cases in {total:.0f} s; JSON in {args.out}")
    Path(args.out).write_text(
        json.dumps(
            {
                "device": device,
                "run": run,
                "flops_per_token": flops,
                "total_s": total,
                "torch": torch.__version__,
                "cases": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
