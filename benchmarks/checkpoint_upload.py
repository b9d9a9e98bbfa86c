"""Seconds of training stalled per checkpoint with synchronous vs asynchronous upload to S3.

    .venv/bin/python benchmarks/checkpoint_upload.py [--model smollm2|tiny] [--rate-mb-s 40] [--steps 3]

A full fine-tune (one CPU worker, no DeepSpeed) uploads each checkpoint to a local S3 server (moto on 127.0.0.1)
slowed to `--rate-mb-s` per request, so an upload takes seconds: with the embedded SmolLM2-135M a checkpoint is
~1.6 GB (fp32 weights and AdamW states; the server holds it in memory), with the 2-layer tiny test model ~4.5 MB,
which needs a rate below 1 MB/s to take seconds. The job runs once with `cluster.checkpoint_upload: sync` and once
with `async`; the stall is
what rayfit's checkpoint callback adds to the step (`training paused X s` in the log), the upload time is the sync
stall. Prints one JSON line per mode and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def slow_s3(rate: float) -> tuple[str, object]:
    """A moto S3 server on 127.0.0.1 whose request bodies are read at `rate` bytes/s; returns (endpoint, server)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)

    class SlowBody:
        """The request body, read at `rate` bytes/s (clients may send it chunked, without a Content-Length)."""

        def __init__(self, raw):
            self.raw = raw

        def read(self, *args):
            data = self.raw.read(*args)
            time.sleep(len(data) / rate)
            return data

        def readline(self, *args):
            data = self.raw.readline(*args)
            time.sleep(len(data) / rate)
            return data

    def throttled(environ, start_response):
        environ["wsgi.input"] = SlowBody(environ["wsgi.input"])
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, throttled, threaded=True)
    server.RequestHandlerClass.log_request = lambda *a, **k: None  # one line per request otherwise
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def run(mode: str, model: Path, steps: int, endpoint: str, work: Path) -> list[float]:
    """One job in `mode`; the stall of each checkpoint in seconds."""
    spec = {
        "model": {"base": str(model), "method": "full", "dtype": "float32"},
        "data": {"train": [{"path": "embedded:construction-faq"}], "max_seq_len": 256},
        "train": {
            "max_steps": steps,
            "learning_rate": 1e-5,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": None,
            "save_steps": 1,
            "keep_checkpoints": 1,
        },
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1, "checkpoint_upload": mode},
        "output": {"storage": "s3://bench/runs", "name": f"upload-{mode}"},
    }
    path = work / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(work),
        "RAYFIT_CACHE": str(work / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.finetune", str(path), "--address", "local"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(out[-4000:])
    return [float(s) for s in dict.fromkeys(re.findall(r"training paused ([\d.]+) s", out))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate-mb-s", type=float, default=40.0, help="upload throughput of the local S3 server")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps, one checkpoint after each")
    p.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2", help="the model fine-tuned")
    args = p.parse_args()
    import boto3

    endpoint, server = slow_s3(args.rate_mb_s * 1e6)
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).create_bucket(Bucket="bench")
    results, raw = {}, []
    with tempfile.TemporaryDirectory(prefix="rf-upload-") as tmp:
        if args.model == "tiny":
            sys.path.insert(0, str(REPO))
            from tests.tiny_model import build_tiny_model

            model = build_tiny_model(Path(tmp) / "tiny-model")
        else:
            from cluster.embedded import embedded_model_dir

            model = embedded_model_dir()
        for mode in ("sync", "async"):
            stalls = run(mode, model, args.steps, endpoint, Path(tmp))
            results[mode] = statistics.median(stalls)
            print(json.dumps({"mode": mode, "stall_s": stalls, "median_s": results[mode]}), flush=True)
            raw.append({"mode": mode, "stall_s": stalls})
    server.shutdown()
    from benchmarks.results import write_results

    write_results(
        f"checkpoint_upload-{args.model}",
        runs=raw,
        summary={
            "sync_median_s": results["sync"],
            "async_median_s": results["async"],
            "async_over_sync": round(results["async"] / results["sync"], 3),
            "rate_mb_s": args.rate_mb_s,
        },
    )


if __name__ == "__main__":
    main()
