"""Seconds from a job's success to its `ft:` model's first answer, on the app that trained it (goal <= 5 s on CPU).

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python -m benchmarks.service_publish [--jobs 3] [--steps 10]

One private local Ray and one app, set up as `rayfit demo` does (jobs/cli/demo.py: embedded SmolLM2-135M-Instruct
on vLLM, the CPU template, the embedded FAQ uploaded once). Then `--jobs` short jobs one after another (the template
with `train.max_steps` lowered and its evaluation off through the request's `rayfit.spec`: the publish path is the
same). For each, the client polls the job every `--poll-s` and, once it reads `succeeded`, streams one answer of the
`ft:` model, then a second one (the adapter loaded: what any later request costs). The jobs run twice as many times:
first on the app with `finetune.preload` off (the adapter is loaded by its first request), then, redeployed, with it
on (the replica loads it as soon as the job succeeds), so the two are measured on one machine in one run.

Times are taken from the store itself, to the millisecond: `published` is when the job's driver wrote the model
record (the storage folder is local here), `succeeded` when it wrote the job's final status. Reported per job:
succeeded -> first token of the ft: model (the goal), succeeded -> whole answer, what the client's poll added, and
the first request's time to first token against the second's (the adapter's loading into vLLM).
Results: benchmarks/results/service_publish.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.results import median, table, write_results
from jobs.cli.demo import app_args, deploy, free_port, start_ray

TERMINAL = ("succeeded", "failed", "cancelled")
QUESTION = "What is a bygglov?"
MAX_TOKENS = 16


def streamed(client, model: str) -> tuple[float, float]:
    """(time of the first content token, time of the answer's end) of one greedy streamed answer."""
    first = None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.time()
    return first or time.time(), time.time()


def one_job(client, storage: Path, base: str, file_id: str, steps: int, poll_s: float) -> dict:
    """Create, wait (polls of `poll_s`), then time two answers of the published model."""
    short = {"train": {"max_steps": steps, "eval_steps": None}, "evaluate": {"enabled": False}}
    job = client.fine_tuning.jobs.create(
        model=base, training_file=file_id, suffix="bench", extra_body={"rayfit": {"spec": short}}
    )
    while (done := client.fine_tuning.jobs.retrieve(job.id)).status not in TERMINAL:
        time.sleep(poll_s)
    seen = time.time()
    if done.status != "succeeded":
        raise RuntimeError(f"{job.id} ended {done.status}: {done.error}")
    first_token, answered = streamed(client, done.fine_tuned_model)
    asked_again = time.time()
    again_token, again_end = streamed(client, done.fine_tuned_model)
    published = (storage / "records" / "models" / f"{done.fine_tuned_model}.json").stat().st_mtime
    succeeded = (storage / "jobs" / job.id / "status.json").stat().st_mtime
    return {
        "job": job.id,
        "model": done.fine_tuned_model,
        "succeeded_to_first_token_s": round(first_token - succeeded, 2),
        "succeeded_to_answer_s": round(answered - succeeded, 2),
        "published_to_succeeded_s": round(succeeded - published, 2),
        "poll_s": round(seen - succeeded, 2),
        "first_request_ttft_s": round(first_token - seen, 2),
        "second_request_ttft_s": round(again_token - asked_again, 2),
        "second_request_answer_s": round(again_end - asked_again, 2),
    }


def main() -> None:
    """Set up once, run the jobs, write the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--poll-s", type=float, default=0.2, help="how often the client reads the job")
    parser.add_argument("--num-cpus", type=int, default=6)
    parser.add_argument("--storage", default=None, help="default: a new folder under ~/rayfit-runs/service-bench/")
    opts = parser.parse_args()

    import ray
    from openai import OpenAI
    from ray import serve

    from cluster.embedded import embedded_data_path, embedded_model_dir
    from jobs.cli.files import upload_file

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    storage = Path(os.path.expanduser(opts.storage or f"~/rayfit-runs/service-bench/{int(time.time())}"))
    storage.mkdir(parents=True, exist_ok=True)
    embedded_model_dir()
    port, dashboard = free_port(), free_port()
    runs, loads = [], []
    try:
        start_ray(opts.num_cpus, dashboard)
        head = f"http://127.0.0.1:{dashboard}"
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=2, timeout=600)
        for preload in (False, True):
            args = app_args(str(storage), head)
            args["finetune"]["preload"] = preload
            deploy(head, port, args)
            base = client.models.list().data[0].id
            file_id = upload_file(client, embedded_data_path("construction-faq")).id
            for _ in range(opts.jobs):
                job = one_job(client, storage, base, file_id, opts.steps, opts.poll_s)
                runs.append({"preload": preload, **job, "load": os.getloadavg()[0]})
                loads.append(runs[-1]["load"])
                print(runs[-1], flush=True)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()

    keys = (
        "succeeded_to_first_token_s",
        "succeeded_to_answer_s",
        "poll_s",
        "first_request_ttft_s",
        "second_request_ttft_s",
        "second_request_answer_s",
    )
    med = {
        f"{k}{'' if p else '_no_preload'}": median([r[k] for r in runs if r["preload"] == p]) for k in keys for p in (False, True)
    }
    labels = {
        "succeeded_to_first_token_s": "job succeeded -> first token of the ft: model (goal <= 5 s)",
        "succeeded_to_answer_s": f"job succeeded -> whole answer ({MAX_TOKENS} tokens)",
        "poll_s": f"of which: the client noticing (polls every {opts.poll_s:g} s)",
        "first_request_ttft_s": "of which: the first request, to its first token (with the load, unless preloaded)",
        "second_request_ttft_s": "a second request, to its first token (adapter loaded)",
        "second_request_answer_s": f"a second request, whole answer ({MAX_TOKENS} tokens)",
    }
    rows = [
        [labels[k], f"{med[k + '_no_preload']:.2f}", f"{med[k]:.2f}", ", ".join(f"{r[k]:.2f}" for r in runs if r["preload"])]
        for k in keys
    ]
    header = ["interval", "preload off (s, median)", "preload on (s, median)", "preload on, runs"]
    write_results(
        "service_publish",
        runs=runs,
        summary={**med, "jobs": len(runs), "steps": opts.steps, "load_average_1m": median(loads)},
        tables={"service_publish": table(header, rows)},
        notes=f"2-core machine shared with other work (1-minute load average {min(loads):.1f} to {max(loads):.1f} "
        "when each job ended); times from the store's file times and the client's clock, one machine.",
    )


if __name__ == "__main__":
    main()
