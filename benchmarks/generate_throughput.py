"""Output tokens/s of `rayfit generate` against the transformers `generate` path evaluation used before, and of 2
engine replicas on 2 simulated Ray nodes against 1.

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python benchmarks/generate_throughput.py [--prompts 64] [--max-tokens 64]

Same model (the embedded SmolLM2-135M-Instruct, float32), same prompts (the first --prompts questions of the embedded
FAQ, the model's chat template), same lengths (every answer exactly --max-tokens tokens: `ignore_eos` for vLLM,
`min_new_tokens` for transformers), greedy, in one run:
1. transformers: evaluation's answer path before it moved to vLLM (cluster/evaluation/scoring.py `generate`, copied
   below): batches of 8 (evaluate.batch_size's default), left-padded, one process with the machine's threads;
2. `rayfit generate` (cluster.generation: ray.data.llm's vLLM processor, one engine) on a private local Ray, input
   JSONL in, output JSONL out;
3. `rayfit generate` with 1, then 2 replicas on a ray.cluster_utils.Cluster of a head (0 CPUs: the driver) and two
   nodes of 2 logical CPUs each, all on this one machine.
Tokens/s are reported end to end (engine start included) and for decoding alone: transformers' after its model load,
rayfit's from its first written block to its last (`after_first_block`: an upper estimate, as rows in flight at the
first block had part of their decoding before it; with many more prompts than the engine batches, the first block
comes after the engine's start and the estimate converges). During
run 2 the peak RSS of the engine's processes (Ray Data's engine actor, vLLM's engine core and worker) is sampled:
cluster/planner/steps.py's VLLM_BASELINE is that sum less the weights and the 1 GiB KV cache.
Writes benchmarks/results/generate_throughput.json (tables `engines`, `replicas`), which docs/benchmarks.md quotes;
`--resummarize` recomputes its summary and tables from the runs it holds, without measuring again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
MODEL = "embedded:smollm2-135m-instruct"


def questions(count: int) -> list[str]:
    """The first `count` questions of the embedded FAQ."""
    from cluster.embedded import embedded_data_path

    lines = embedded_data_path("construction-faq").read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line)["instruction"] for line in lines]


def transformers_path(prompts: list[str], max_tokens: int, batch_size: int = 8) -> dict:
    """Evaluation's old answer path: greedy `model.generate` on left-padded batches, every answer max_tokens long."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.embedded import embedded_model_dir

    folder = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = time.perf_counter()
    rendered = [
        tokenizer(
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for p in prompts
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = 0
    with torch.no_grad():
        for i in range(0, len(rendered), batch_size):
            batch = rendered[i : i + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            tokens += (out.shape[1] - width) * len(batch)
    done = time.perf_counter()
    return {
        "path": "transformers generate (evaluation before)",
        "output_tokens": tokens,
        "seconds": done - started,
        "decode_seconds": done - loaded,
        "tok_s": tokens / (done - started),
        "decode_tok_s": tokens / (done - loaded),
    }


def rayfit_generate(prompts: list[str], max_tokens: int, replicas: int, folder: Path, label: str, **engine) -> dict:
    """`rayfit generate` (prepare + generate, as the CLI runs them) on the Ray this process is connected to; `engine`:
    GenerateSettings fields that differ from its defaults (max_num_seqs, batch_size, enforce_eager)."""
    from cluster.generation.engine import engine_kwargs
    from cluster.generation.pipeline import generate, prepare
    from cluster.generation.settings import GenerateSettings

    source = folder / f"{label}-in.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    settings = GenerateSettings(
        model=MODEL,
        input=str(source),
        output=str(folder / f"{label}-out.jsonl"),
        max_tokens=max_tokens,
        max_model_len=1024,
        dtype="float32",
        replicas=replicas,
        block_rows=8,  # small blocks: their times show the decoding rate (after_first_block)
        sampling={"ignore_eos": True},
        **engine,
    )
    blocks: list[tuple[float, int]] = []  # (when, rows) of each written block

    def say(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    job = prepare(settings)
    original = job.writer.write_block

    def write_block(block, rows):
        original(block, rows)
        blocks.append((time.perf_counter(), len(rows)))

    job.writer.write_block = write_block
    report = generate(job, say=say)
    done = time.perf_counter()
    rows = [json.loads(line) for line in Path(settings.output).read_text().splitlines()]
    assert len(rows) == len(prompts) and all(r["output_tokens"] == max_tokens for r in rows), "not every answer full length"
    return {
        "path": label,
        "replicas": replicas,
        # the engine's settings, the auto ones resolved (for CPU replicas)
        "batch_size": settings.batch_size,
        **{k: engine_kwargs(settings, [])[k] for k in ("max_num_seqs", "enforce_eager")},
        "output_tokens": report.output_tokens,
        "seconds": done - started,
        "first_block_s": blocks[0][0] - started if blocks else None,
        "tok_s": report.output_tokens / (done - started),
        "blocks": [(round(when - started, 2), n) for when, n in blocks],
        "failed": report.failed,
    }


def after_first_block(run: dict, max_tokens: int) -> float | None:
    """Decoding, engine start left out: tokens/s of the rows written after the first block, over the time from the
    first block to the last (`run["blocks"]`: [seconds since the start, rows] of each written block). Rows in flight
    when the first block was written had part of their decoding before it, so this is an upper estimate of the steady
    rate; the end-to-end rate (start included) is the lower one. None when the engine could take every row at once
    (rows <= max_num_seqs; runs before it was recorded had the old default, 64): then the rows decode together and the
    blocks only show them ending."""
    blocks = run["blocks"]
    if sum(n for _, n in blocks) <= (run.get("max_num_seqs") or 64) or len(blocks) < 2 or blocks[-1][0] <= blocks[0][0]:
        return None
    return sum(n for _, n in blocks[1:]) * max_tokens / (blocks[-1][0] - blocks[0][0])


class EngineMemory:
    """Peak RSS of each process of a vLLM engine (sampled every 0.5 s in a thread) while the `with` block runs, by
    pid: Ray retitles its actor process with the method it runs (`.__init__`, `.submit`), so one process shows
    under several titles; `peak` names each pid by its first title."""

    NAMES = ("VLLM::", "MapBatches(vLLMEngineStageUDF)")

    def __enter__(self):
        import threading

        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (title, peak RSS)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        import psutil

        while not self.stop.is_set():
            for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                name = " ".join(p.info["cmdline"] or [])
                if any(n in name for n in self.NAMES) and p.info["memory_info"]:
                    title, peak = self.peaks.get(p.info["pid"], (name.split()[0][:60], 0))
                    self.peaks[p.info["pid"]] = (title, max(peak, p.info["memory_info"].rss))
            self.stop.wait(0.5)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def peak(self) -> dict[str, int]:
        """Peak RSS per process, keyed `title (pid)`."""
        return {f"{title} ({pid})": rss for pid, (title, rss) in self.peaks.items()}


def float32_bytes(folder: Path) -> int:
    """The model's weights in float32 (what the engine holds: dtype float32), counted from the safetensors headers."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total * 4


def engine_nodes() -> list[str]:
    """Node ids of the vLLM engine actors Ray has seen (Ray's state API), to show where replicas ran."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "MapWorker(MapBatches(vLLMEngineStageUDF))")], detail=True)
    return sorted({a.node_id[:8] for a in actors if a.node_id})  # an actor never placed has no node


def main() -> None:
    """Run the three parts and write the results file."""
    import ray
    from ray.cluster_utils import Cluster

    from benchmarks.results import write_results
    from cluster.embedded import embedded_model_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--resummarize", action="store_true", help="recompute the results file's tables from its runs")
    args = parser.parse_args()
    if args.resummarize:
        return resummarize()
    prompts = questions(args.prompts)
    runs = []
    with tempfile.TemporaryDirectory(prefix="rayfit-bench-generate-") as tmp:
        folder = Path(tmp)
        runs.append(transformers_path(prompts, args.max_tokens))
        print(runs[-1], flush=True)
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
        with EngineMemory() as memory:
            runs.append(rayfit_generate(prompts, args.max_tokens, 1, folder, "rayfit generate, local Ray"))
        weights = float32_bytes(embedded_model_dir())
        runs[-1]["engine_peak_rss_gib"] = {k: round(v / 2**30, 2) for k, v in memory.peak.items()}
        runs[-1]["engine_rss_less_weights_and_kv_gib"] = round((sum(memory.peak.values()) - weights) / 2**30 - 1, 2)
        print(runs[-1], flush=True)
        ray.shutdown()

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True})
        nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            for replicas in (1, 2):
                run = rayfit_generate(prompts, args.max_tokens, replicas, folder, f"cluster-{replicas}")
                run["engine_nodes"] = engine_nodes()
                runs.append(run)
                print(runs[-1], flush=True)
        finally:
            ray.shutdown()
            for node in nodes:
                cluster.remove_node(node)
            cluster.shutdown()

    summary, tables = summarize(runs, len(prompts), args.max_tokens)
    write_results("generate_throughput", runs=runs, summary=summary, tables=tables)


def resummarize() -> None:
    """Recompute the summary and tables of benchmarks/results/generate_throughput.json from its raw runs."""
    from benchmarks import results

    def recompute(old: dict) -> tuple[dict, dict]:
        for run in old["runs"]:
            run.pop("second_half_tok_s", None)  # an earlier estimate, counted from the middle row: wrong when rows end in waves
        summary, tables = summarize(old["runs"], old["summary"]["prompts"], old["summary"]["max_tokens"])
        return {**summary, "load_average": old["summary"].get("load_average")}, tables

    results.resummarize("generate_throughput", recompute)


def summarize(runs: list[dict], prompts: int, max_tokens: int) -> tuple[dict, dict]:
    """The summary and the tables `engines` and `replicas` from the four runs."""
    from benchmarks.results import table

    for run in runs[1:]:
        run["after_first_block_tok_s"] = after_first_block(run, max_tokens)
    hf, local, one, two = runs
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    divide = lambda a, b: None if a is None or not b else a / b  # noqa: E731
    ratio = lambda a, b: fmt(divide(a, b))  # noqa: E731
    engines = table(
        ["path", "output tokens", "wall s (load/start included)", "tok/s end to end", "tok/s decoding"]
        + ["ratio end to end", "ratio decoding"],
        [
            [hf["path"], hf["output_tokens"], fmt(hf["seconds"]), fmt(hf["tok_s"]), fmt(hf["decode_tok_s"]), "1.0", "1.0"],
            [
                "rayfit generate (ray.data.llm + vLLM, 1 engine)",
                local["output_tokens"],
                fmt(local["seconds"]),
                fmt(local["tok_s"]),
                fmt(local["after_first_block_tok_s"]),
                fmt(local["tok_s"] / hf["tok_s"]),
                ratio(local["after_first_block_tok_s"], hf["decode_tok_s"]),
            ],
        ],
    )
    replicas = table(
        ["replicas", "simulated nodes used", "wall s", "tok/s end to end", "tok/s decoding (after the first block)"]
        + ["vs 1 replica (end to end)", "vs 1 replica (decoding)"],
        [
            [r["replicas"], len(r["engine_nodes"]), fmt(r["seconds"]), fmt(r["tok_s"]), fmt(r["after_first_block_tok_s"])]
            + [fmt(r["tok_s"] / one["tok_s"]), ratio(r["after_first_block_tok_s"], one["after_first_block_tok_s"])]
            for r in (one, two)
        ],
    )
    summary = {
        "prompts": prompts,
        "max_tokens": max_tokens,
        "end_to_end_ratio": local["tok_s"] / hf["tok_s"],
        "decoding_ratio": divide(local["after_first_block_tok_s"], hf["decode_tok_s"]),
        "two_replicas_vs_one": divide(two["after_first_block_tok_s"], one["after_first_block_tok_s"]),
        "two_replicas_vs_one_end_to_end": two["tok_s"] / one["tok_s"],
        "engine_rss_less_weights_and_kv_gib": local["engine_rss_less_weights_and_kv_gib"],
        "load_average": os.getloadavg(),
    }
    return summary, {"engines": engines, "replicas": replicas}


if __name__ == "__main__":
    main()
