"""`rayfit generate MODEL --input IN --output OUT`: answer every row of a dataset with vLLM engines on Ray Data."""

from __future__ import annotations

import argparse
import os

EPILOG = """examples:
  rayfit generate embedded:smollm2-135m-instruct --input embedded:construction-faq --output answers.jsonl
  rayfit generate ~/rayfit-runs/demo-cpu --input held_out.jsonl --output s3://bucket/answers.parquet --replicas 2
  rayfit generate BASE --config generate.yaml --sampling temperature=0.7 --sampling seed=1 --n 4
  ray job submit --working-dir . -- rayfit generate ~/rayfit-runs/demo-cpu --input IN.jsonl --output s3://b/out.jsonl

distillation (training records: the conversation + the teacher's answer, the system prompt dropped):
  rayfit generate embedded:smollm2-135m-instruct --input embedded:construction-faq --output distilled.jsonl \
      --system-prompt "Answer in one short sentence." --as-training-data
  OPENAI_API_KEY=... rayfit generate gpt-4o-mini --teacher-url https://api.openai.com/v1 --input q.jsonl \
      --output distilled.jsonl --as-training-data

A killed run continues where it stopped when run again with the same arguments (OUTPUT.parts/ holds finished blocks).
docs/generate.md has every setting."""

# Flag name -> settings field, for the flags that set one field each.
FLAGS = {
    "input": "input",
    "output": "output",
    "adapter": "adapter",
    "system_prompt": "system_prompt",
    "input_format": "input_format",
    "n": "n",
    "max_tokens": "max_tokens",
    "max_model_len": "max_model_len",
    "replicas": "replicas",
    "gpus_per_replica": "gpus_per_replica",
    "tensor_parallel_size": "tensor_parallel_size",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "block_rows": "block_rows",
    "enforce_eager": "enforce_eager",
    "as_training_data": "as_training_data",
    "keep_system_prompt": "keep_system_prompt",
}
# Flag name -> teacher field.
TEACHER_FLAGS = {"teacher_url": "url", "teacher_api_key_env": "api_key_env", "teacher_timeout_s": "timeout_s"}


def register(subparsers) -> None:
    """Add the `generate` subcommand."""
    p = subparsers.add_parser(
        "generate",
        help="batch generation: answer every row of a dataset with a model (vLLM on Ray Data)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="a base, an export, a LoRA checkpoint or a run folder")
    p.add_argument("--config", help="a YAML file of generate settings (flags win over it)")
    p.add_argument("--input", help="prompts: a file, folder or URI, or hf:<dataset>, in any record shape training reads")
    p.add_argument("--output", help="OUT.jsonl or OUT.parquet, local or s3:// / gs://")
    p.add_argument("--adapter", help="a LoRA adapter to answer with (checkpoint, run folder or PEFT folder)")
    p.add_argument("--system-prompt", help="system message for prompts that have none")
    p.add_argument("--input-format", help="record shape of the input (default: detected)")
    p.add_argument("--n", type=int, help="answers per prompt")
    p.add_argument("--max-tokens", type=int, help="longest answer in tokens")
    p.add_argument("--max-model-len", type=int, help="longest prompt + answer in tokens")
    p.add_argument(
        "--sampling", action="append", default=[], metavar="KEY=VALUE", help="a sampling setting, e.g. temperature=0.7"
    )
    p.add_argument("--replicas", type=int, help="vLLM engine replicas")
    p.add_argument("--gpus-per-replica", type=float, help="GPUs per replica (0 on CPU)")
    p.add_argument("--tensor-parallel-size", type=int, help="GPUs one replica shards the model over")
    p.add_argument("--dtype", help="auto, float32, bfloat16 or float16")
    p.add_argument("--batch-size", type=int, help="rows sent to an engine at a time")
    p.add_argument("--block-rows", type=int, help="input rows per output block (the unit a rerun skips)")
    p.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip torch.compile (--no-enforce-eager: compile); default: eager on CPU replicas, compiled on GPUs",
    )
    p.add_argument(
        "--as-training-data",
        action="store_true",
        default=None,
        help="write training records {messages: conversation + answer} (distillation); rejects go to OUT.rejected.jsonl",
    )
    p.add_argument(
        "--keep-system-prompt", action="store_true", default=None, help="with --as-training-data: keep --system-prompt"
    )
    p.add_argument("--teacher-url", help="answer through this OpenAI-compatible endpoint (MODEL is its model name)")
    p.add_argument("--teacher-api-key-env", help="environment variable with the endpoint's API key (default OPENAI_API_KEY)")
    p.add_argument("--teacher-timeout-s", type=float, help="seconds a teacher request may take before its row fails")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address (default: RAY_ADDRESS, as inside `ray job submit`; else a new local Ray)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    """Validate, check output, model and input, start or join Ray, generate, print the summary."""
    from cluster.generation.pipeline import generate, prepare
    from cluster.generation.settings import load_settings
    from jobs.engine_ray import connect

    flags = {"model": args.model} | {field: getattr(args, flag) for flag, field in FLAGS.items()}
    teacher = {field: getattr(args, flag) for flag, field in TEACHER_FLAGS.items() if getattr(args, flag) is not None}
    if teacher:
        flags["teacher"] = teacher
    job = prepare(load_settings(args.config, flags, args.sampling))  # refused here, before Ray or an engine starts
    connect(args.address)
    report = generate(job)
    print(report.summary())
    for failure in report.failures:
        print(f"  failed: {failure}")
    return 0
