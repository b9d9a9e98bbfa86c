"""Seconds from a job's success to its `ft:` model's first answer, on the app that trained it (goal <= 5 s on CPU).

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python -m benchmarks.service_publish [--jobs 3] [--steps 10]

One private local Ray and one app, set up as `rayfit demo` does (jobs/cli/demo.py: embedded SmolLM2-135M-Instruct
on vLLM, the CPU template, the embedded FAQ uploaded once). Then `--jobs` short jobs one after another (the template
with `train.max_steps` lowered through the request's `rayfit.spec`). For each, the client polls the job every 0.2 s
and, once it reads `succeeded`, asks the `ft:` model one question. Two figures per job: from the job's `finished_at`
(set by its driver when it published; whole seconds) to the end of the first answer, and from the moment the client
saw `succeeded` to that answer (the load and first request of the adapter). Results:
benchmarks/results/service_publish.json.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.results import median, table, write_results
from jobs.cli.demo import app_args, deploy, free_port, start_ray

TERMINAL = ("succeeded", "failed", "cancelled")


def one_job(client, base: str, file_id: str, steps: int, question: str) -> dict:
    """Create, wait (0.2 s polls), then time the first answer of the published model."""
    job = client.fine_tuning.jobs.create(
        model=base, training_file=file_id, suffix="bench", extra_body={"rayfit": {"spec": {"train": {"max_steps": steps}}}}
    )
    while (done := client.fine_tuning.jobs.retrieve(job.id)).status not in TERMINAL:
        time.sleep(0.2)
    seen = time.time()
    if done.status != "succeeded":
        raise RuntimeError(f"{job.id} ended {done.status}: {done.error}")
    client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0
    )
    answered = time.time()
    return {
        "job": job.id,
        "model": done.fine_tuned_model,
        "success_to_first_answer_s": round(answered - done.finished_at, 2),
        "seen_success_to_first_answer_s": round(answered - seen, 2),
    }


def main() -> None:
    """Set up once, run the jobs, write the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
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
    storage = os.path.expanduser(opts.storage or f"~/rayfit-runs/service-bench/{int(time.time())}")
    os.makedirs(storage, exist_ok=True)
    embedded_model_dir()
    port, dashboard = free_port(), free_port()
    runs = []
    try:
        start_ray(opts.num_cpus, dashboard)
        head = f"http://127.0.0.1:{dashboard}"
        deploy(head, port, app_args(storage, head))
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=2, timeout=600)
        base = client.models.list().data[0].id
        file_id = upload_file(client, embedded_data_path("construction-faq")).id
        for _ in range(opts.jobs):
            runs.append(one_job(client, base, file_id, opts.steps, "What is a bygglov?"))
            print(runs[-1], flush=True)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()

    med = {k: median([r[k] for r in runs]) for k in ("success_to_first_answer_s", "seen_success_to_first_answer_s")}
    rows = [
        ["job finished_at -> first answer of the ft: model", f"{med['success_to_first_answer_s']:.1f}",
         ", ".join(str(r["success_to_first_answer_s"]) for r in runs)],
        ["client saw succeeded -> first answer", f"{med['seen_success_to_first_answer_s']:.1f}",
         ", ".join(str(r["seen_success_to_first_answer_s"]) for r in runs)],
    ]  # fmt: skip
    write_results(
        "service_publish",
        runs=runs,
        summary={**med, "jobs": len(runs), "steps": opts.steps},
        tables={"service_publish": table(["interval", "seconds (median)", "runs"], rows)},
        notes="2-core machine shared with other work; finished_at has whole-second resolution.",
    )


if __name__ == "__main__":
    main()
