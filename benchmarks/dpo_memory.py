"""Peak memory of LoRA-DPO against LoRA-SFT: same model (SmolLM2-135M, fp32), same max_seq_len, same steps, CPU.

    .venv/bin/python benchmarks/dpo_memory.py [--runs 2] [--steps 6]

Each run is rayfit's `train_loop` in a fresh process without Ray (one worker, no DeepSpeed), reading its own peak
resident memory (ru_maxrss) at the end. SFT reads the FAQ tokenized and packed into 256-token rows; DPO reads the
FAQ as pairs (chosen = the answer, rejected = the next question's answer), 2 sequences per pair, max_length 256.
Runs alternate SFT, DPO, SFT, DPO so that load on a shared machine hits both alike; medians and every run go to
benchmarks/results/dpo_memory.json (table `memory`).
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
CHILD = (
    "import json, resource, sys; from cluster.training.loop import train_loop; "
    "out = train_loop(json.load(open(sys.argv[1]))); "
    "print('RESULT', json.dumps({'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "'losses': [e['loss'] for e in out['log_history'] if 'loss' in e]}))"
)


def spec_dict(objective: str, data_path: str, storage: str, steps: int) -> dict:
    """The benchmark spec of one objective; everything but the objective and the data is the same."""
    return {
        "model": {
            "base": "embedded:smollm2-135m-instruct",
            "method": "lora",
            "dtype": "float32",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        },
        "data": {"train": [{"path": data_path}], "max_seq_len": 256, "eval_split": 0.0},
        "train": {
            "objective": objective,
            "max_steps": steps,
            "learning_rate": 5e-4,
            "eval_steps": None,
            "save_steps": 1000,
            "logging_steps": 1,
            "gradient_checkpointing": False,
            "micro_batch_size": 1,
        },
        "cluster": {"num_workers": 1, "cpus_per_worker": 1},
        "output": {"storage": storage, "name": f"bench-{objective}"},
    }


def write_pairs(path: Path) -> str:
    """The FAQ as DPO pairs: the answer is chosen, the next question's answer rejected."""
    from cluster.embedded import embedded_data_path

    rows = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")]
    path.write_text(
        "".join(
            json.dumps({"prompt": r["instruction"], "chosen": r["output"], "rejected": rows[(i + 1) % len(rows)]["output"]})
            + "\n"
            for i, r in enumerate(rows)
        ),
        encoding="utf-8",
    )
    return str(path)


def measure(config: dict, tmp: Path, attempt: int) -> dict:
    """Run train_loop in a child process (a fresh run folder each time); its peak RSS in KiB and its losses."""
    objective = config["spec"]["train"]["objective"]
    config = {**config, "run": str(tmp / "runs" / f"{objective}-{attempt}")}
    path = tmp / f"config-{objective}-{attempt}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])


def main() -> None:
    """Measure, print the table."""
    import datasets

    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec
    from cluster.training.trainer import loop_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        configs = {}
        for objective, source in (("sft", "embedded:construction-faq"), ("dpo", write_pairs(tmp / "pairs.jsonl"))):
            spec = validate_spec(spec_dict(objective, source, str(tmp / "runs"), args.steps))
            data = prepare_datasets(spec, load_tokenizer(spec), str(tmp / "data"))
            configs[objective] = loop_config(spec, data.train_path, None)
        peaks = {"sft": [], "dpo": []}
        for attempt in range(args.runs):
            for objective in ("sft", "dpo"):
                result = measure(configs[objective], tmp, attempt)
                peaks[objective].append(result["maxrss_kib"] / 1024**2)
                print(f"{objective}: peak {peaks[objective][-1]:.2f} GiB, losses {result['losses']}", file=sys.stderr)
    sft, dpo = statistics.median(peaks["sft"]), statistics.median(peaks["dpo"])
    from benchmarks.results import table, write_results

    rows = [
        ["LoRA-SFT (packed 256-token rows)", f"{sft:.2f}", ", ".join(f"{p:.2f}" for p in peaks["sft"])],
        ["LoRA-DPO (pairs, 2 x up to 256 tokens)", f"{dpo:.2f}", ", ".join(f"{p:.2f}" for p in peaks["dpo"])],
    ]
    write_results(
        "dpo_memory",
        runs=[{"objective": o, "peak_gib": peaks[o]} for o in peaks],
        summary={"sft_gib": sft, "dpo_gib": dpo, "dpo_over_sft": round(dpo / sft, 3), "steps": args.steps},
        tables={"memory": table(["objective", "peak RSS (GiB, median)", "runs"], rows)},
    )


if __name__ == "__main__":
    main()
