"""The planner's memory per worker against what 2 sharded CPU workers really hold (ZeRO-3 QLoRA, FSDP2 QLoRA/full).

    .venv/bin/python -m benchmarks.sharding_memory [--runs 2] [--steps 4] [--model embedded:smollm2-135m-instruct]
        [--cases zero3-qlora fsdp2-qlora fsdp2-full]

Each case is rayfit's `train_loop` on 2 processes (torch.distributed's launcher, gloo, no Ray: Ray's own processes
would blur the numbers), on the embedded SmolLM2-135M at float32 (rayfit's CPU dtype), packed 256-token rows. Each
rank reads its memory right before `train_loop` (after imports and the process group: what any worker holds before a
model exists), then two figures of what the run added:
- anonymous memory during the steps: the highest RssAnon (/proc/self/status) sampled every 10 ms from the first
  step's start to the last step's end, with glibc's malloc told to give freed tensors back (`MALLOC`, below). This is
  what the planner models, what a GPU would hold while it trains. It leaves out the model file's pages (mapped from
  the page cache, shared and reclaimable: on a GPU they stay on the host);
- the RSS high-water mark (ru_maxrss) at the last step's end, before the final checkpoint gathers anything: the load's
  peak and the mapped file included, the figure a host-memory limit meets.
The planner's
figure is `make_plan(spec).memory.allocated` for the same spec on 2 workers (cluster/planner/memory.py: weights,
adapters, gradients, optimizer states, gathered layers and activations per worker; the GPU reserve left out, as a CPU
has no CUDA context). Medians of the runs go to benchmarks/results/sharding_memory.json (table `sharding`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CASES = (  # (name, method, sharding)
    ("zero3-qlora", "qlora", "deepspeed_zero3"),
    ("fsdp2-qlora", "qlora", "fsdp2"),
    ("fsdp2-full", "full", "fsdp2"),
)
# glibc's malloc serves blocks over a threshold with their own mmap and unmaps them when freed, but it raises that
# threshold as large blocks are freed (up to 32 MiB), after which freed tensors stay in its heap and in RSS. A fixed
# threshold keeps it at 128 KiB, so a tensor's memory leaves RSS when the tensor goes: RSS then follows the live
# tensors, which is what the planner counts (and what torch.cuda.max_memory_allocated would count on a GPU).
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
CHILD = """
import json, os, resource, sys
import torch.distributed as dist
import deepspeed  # noqa: F401 - imported before the baseline, as every worker imports it
import bitsandbytes  # noqa: F401
from cluster.training.loop import train_loop
config = json.load(open(sys.argv[1]))
dist.init_process_group("gloo")
if config["spec"]["cluster"]["sharding"] == "deepspeed_zero3":
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
import threading
from transformers import TrainerCallback
class Peak(TrainerCallback):  # ru_maxrss at the last step's end; the highest RssAnon sampled during the steps
    peak = anon = 0
    stop = threading.Event()
    def sample(self):
        while not Peak.stop.is_set():
            Peak.anon = max(Peak.anon, status("RssAnon"))
            Peak.stop.wait(0.01)
    def on_train_begin(self, args, state, control, **kwargs):
        threading.Thread(target=self.sample, daemon=True).start()
    def on_step_end(self, args, state, control, **kwargs):
        Peak.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if state.global_step >= state.max_steps:
            Peak.stop.set()
before, before_anon = status("VmRSS"), status("RssAnon")
out = train_loop(config, callbacks=(Peak(),))
losses = [e["loss"] for e in out["log_history"] if "loss" in e]
result = {"rank": dist.get_rank(), "before": before, "peak": Peak.peak, "before_anon": before_anon, "anon": Peak.anon}
print("RESULT", json.dumps({**result, "losses": losses}), flush=True)
"""


def spec_dict(model: str, method: str, sharding: str, data_path: str, storage: str, steps: int) -> dict:
    """The benchmark spec of one case: 2 CPU workers, float32, 256-token rows, no checkpoint before the end."""
    spec = {
        "model": {"base": model, "method": method, "dtype": "float32"},
        "data": {"train": [{"path": data_path}], "max_seq_len": 256, "eval_split": 0.0},
        "train": {
            "max_steps": steps,
            "learning_rate": 5e-4,
            "eval_steps": None,
            "save_steps": 1000,
            "logging_steps": 1,
            "micro_batch_size": 1,
            "gradient_checkpointing": True,
        },
        "cluster": {"num_workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 1, "sharding": sharding},
        "output": {"storage": storage, "name": "bench"},
    }
    if method != "full":
        spec["model"]["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0}
    return spec


def measure(config: dict, tmp: Path, tag: str) -> list[dict]:
    """One 2-rank run of `config` in fresh processes; each rank's RSS before and peak, and its losses."""
    config = {**config, "run": str(tmp / "runs" / tag), "scratch": str(tmp / "scratch" / tag)}
    path = tmp / f"{tag}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **MALLOC}
    child = tmp / "child.py"
    child.write_text(CHILD)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631"]
    proc = subprocess.run([*cmd, str(child), str(path)], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    found = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return sorted(found, key=lambda r: r["rank"])


def main() -> None:
    """Measure every case, compare with the planner, write the results file."""
    import datasets

    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.planner import make_plan
    from cluster.spec import validate_spec
    from cluster.training.trainer import loop_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=[c[0] for c in CASES],
        default=[c[0] for c in CASES],
        help="measure only these (printed, the results file left as it is)",
    )
    args = parser.parse_args()
    datasets.disable_progress_bars()
    mib = 2**20
    runs, rows, summary = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_path = None
        for name, method, sharding in [c for c in CASES if c[0] in args.cases]:
            spec = validate_spec(spec_dict(args.model, method, sharding, "embedded:construction-faq", str(tmp), args.steps))
            if data_path is None:
                data_path = prepare_datasets(spec, load_tokenizer(spec), str(tmp / "data")).train_path
            planned = make_plan(spec).memory
            config = loop_config(spec, data_path, None)
            added, steps_anon = [], []
            for attempt in range(args.runs):
                ranks = measure(config, tmp, f"{name}-{attempt}")
                added += [(r["peak"] - r["before"]) for r in ranks]
                steps_anon += [(r["anon"] - r["before_anon"]) for r in ranks]
                runs.append({"case": name, "attempt": attempt, "ranks": ranks})
                print(f"{name}: anon {[round(a / mib) for a in steps_anon[-2:]]} MiB, {ranks[0]['losses']}", file=sys.stderr)
            measured, anon = statistics.median(added), statistics.median(steps_anon)
            ratio, anon_ratio = planned.allocated / measured, planned.allocated / anon
            summary[name] = {
                "planned_bytes": planned.allocated,
                "steps_anon_bytes": anon,
                "planned_over_steps_anon": anon_ratio,
                "measured_bytes": measured,
                "planned_over_measured": ratio,
            }
            summary[name]["planned_parts"] = {
                k: v for k, v in planned.to_json().items() if k not in ("total", "reserve") and isinstance(v, int)
            }
            rows.append(
                [
                    name,
                    f"{planned.allocated / mib:.0f}",
                    f"{anon / mib:.0f}",
                    f"{100 * (anon_ratio - 1):+.0f}%",
                    f"{measured / mib:.0f}",
                    f"{100 * (ratio - 1):+.0f}%",
                ]
            )
    if len(args.cases) < len(CASES):  # a partial run must not replace the results of every case
        print(json.dumps({"summary": summary, "rows": rows}, indent=1), file=sys.stderr)
        return
    from benchmarks.results import table, write_results

    write_results(
        "sharding_memory",
        runs=runs,
        summary={"model": args.model, "steps": args.steps, "workers": 2, **summary},
        tables={
            "sharding": table(
                [
                    "case (2 CPU workers, SmolLM2-135M, fp32)",
                    "planner (MiB per worker)",
                    "anonymous memory during the steps (MiB per worker)",
                    "planner vs steps",
                    "RSS high-water, load included (MiB per worker)",
                    "planner vs high-water",
                ],
                rows,
            )
        },
    )


if __name__ == "__main__":
    main()
