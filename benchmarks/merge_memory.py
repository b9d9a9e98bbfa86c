"""Peak memory of `python -m jobs.merge`: the streaming merge against the in-memory merge, LoRA and QLoRA.

    .venv/bin/python benchmarks/merge_memory.py [--repeats 3] [--shard-size 30MB] [--dtype float32]

The embedded SmolLM2-135M-Instruct is re-saved in shards of --shard-size (>= 10 shards), an adapter with random
non-zero weights (r=16, all linear layers) is saved as a checkpoint for LoRA and for QLoRA, and each is merged by
jobs.merge's `main` in its own process: streaming (the default path) and in memory (the same entrypoint with the
streaming path switched off, i.e. the merge before this change). That process first imports everything the merge
uses and notes its RSS (the interpreter's baseline), then resets the kernel's peak-RSS mark and merges; "above
baseline" is the peak while merging minus that baseline. The process's whole peak (imports included) comes from
wait4's rusage. The exports' logits on FAQ text are compared (streaming vs in memory). Prints one JSON line per run
and a summary with medians.
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

REPO = Path(__file__).resolve().parents[1]
# The merge process: import what the merge uses, note the RSS (the interpreter's baseline), reset the kernel's peak
# RSS mark (/proc/self/clear_refs), run jobs.merge's main (streaming, or with streaming switched off), report VmHWM.
CHILD = """
import json, sys
import torch, transformers, peft, safetensors, bitsandbytes
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.integrations import replace_with_bnb_linear
import cluster.merge, cluster.merge.export as export, cluster.merge.stream, cluster.model.load, jobs.merge
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
how, argv = sys.argv[1], sys.argv[2:]
if how == 'in_memory':
    export.streaming_blocker = lambda *a: 'benchmark: in memory'
baseline = status('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')
code = jobs.merge.main(argv)
print('RESULT ' + json.dumps({'baseline': baseline, 'peak': status('VmHWM')}), flush=True)
sys.exit(code)
"""
# A small launcher, so the merge process does not inherit the benchmark's own high-water mark across fork/exec.
LAUNCH = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print('MAXRSS', usage.ru_maxrss * 1024, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(how: str, merge_args: list[str]) -> dict:
    """One merge in a fresh process: baseline RSS after imports, peak RSS while merging, process peak, seconds."""
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, sys.executable, "-c", CHILD, how, *merge_args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"merge {how} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    result["process_peak"] = int(next(line for line in lines if line.startswith("MAXRSS "))[7:])
    result["above_baseline"] = result["peak"] - result["baseline"]
    result["seconds"] = round(seconds, 1)
    return result


def sharded_base(out: Path, shard_size: str) -> Path:
    """SmolLM2 re-saved in small shards, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.embedded import embedded_model_dir

    src = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size=shard_size)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def checkpoint(base: Path, method: str, dtype: str, folder: Path) -> Path:
    """A checkpoint with a random non-zero r=16 adapter on every linear layer, and the manifest training writes."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.cluster.merge.checkpoints import lora_config, save_checkpoint, spec_dict

    model_fields = {"quantization": {"compute_dtype": "float32"}} if method == "qlora" else {}
    spec = spec_dict(base, method, name=folder.parent.name, **model_fields)
    spec["model"]["dtype"] = dtype
    spec["model"]["lora"].update(r=16, alpha=32)
    config = lora_config(spec)
    config.init_lora_weights = False
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)), config)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.mul_(0.01)  # a plausible update size, so the merged model still talks
    extra = {"quantization": spec["model"]["quantization"]} if method == "qlora" else None
    return save_checkpoint(model, AutoTokenizer.from_pretrained(base), folder, spec, step=1, extra=extra)


def logits_diff(a: Path, b: Path, base: Path) -> float:
    """Max abs difference of the two exports' logits on a few FAQ questions."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.embedded import embedded_data_path

    rows = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")][:4]
    tok = AutoTokenizer.from_pretrained(base)
    ids = [tok(r["instruction"], add_special_tokens=False)["input_ids"][:24] for r in rows]
    batch = torch.tensor([i[: min(map(len, ids))] for i in ids])
    with torch.no_grad():
        la = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)(input_ids=batch).logits
        lb = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)(input_ids=batch).logits
    return (la - lb).abs().max().item()


def main() -> None:
    """Build the base and checkpoints, measure each merge --repeats times, print JSON lines and medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard-size", default="25MB", help="shard size of the re-saved base (25MB: 10 shards)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the checkpoint's training dtype (float32 on CPU runs), which is the export's dtype",
    )
    p.add_argument("--methods", default="lora,qlora")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rayfit-merge-bench-"))
    base = sharded_base(work / "base", args.shard_size)
    shards = len(list(base.glob("model-*.safetensors")))
    base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    results = {"shards": shards, "base_bytes": base_bytes, "dtype": args.dtype}
    all_runs: list[dict] = []
    for method in args.methods.split(","):
        ckpt = checkpoint(base, method, args.dtype, work / f"{method}-run" / "checkpoint_00000001")
        runs: dict[str, list] = {"streaming": [], "in_memory": []}
        for i in range(args.repeats):
            for how in runs:  # interleaved, so both see the same load on a shared machine
                out = work / f"{method}-{how}"
                subprocess.run(["rm", "-rf", str(out)], check=True)  # merge again, not reuse
                runs[how].append(measure(how, [str(ckpt), "--out", str(out)]))
                print(json.dumps({"method": method, "how": how, "run": i, **runs[how][-1]}), flush=True)
        export_bytes = sum(f.stat().st_size for f in (work / f"{method}-streaming").glob("*.safetensors"))
        summary = {
            "export_bytes": export_bytes,
            "logits_max_abs_diff": logits_diff(work / f"{method}-streaming", work / f"{method}-in_memory", base),
        }
        for how, values in runs.items():
            med = {k: statistics.median(v[k] for v in values) for k in values[0]}
            summary[how] = {
                **med,
                "above_baseline_of_export": med["above_baseline"] / export_bytes,
                "above_baseline_of_base": med["above_baseline"] / base_bytes,
            }
        results[method] = summary
        print(json.dumps({method: summary}), flush=True)
        all_runs += [{"method": method, "how": how, **v} for how, values in runs.items() for v in values]
    from benchmarks.results import write_results

    write_results("merge_memory", runs=all_runs, summary=results)
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
