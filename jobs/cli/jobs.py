"""`rayfit jobs create|list|get|events|cancel|pause|resume|checkpoints`: fine-tuning jobs on a rayfit service
(OpenAI's /v1/fine_tuning/jobs; rayfit's extensions go in the request's `rayfit` key)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cluster.errors import UserError
from jobs.cli._api import add_endpoint_args, api_command, connect, rayfit_route
from jobs.cli._events import follow, new_events
from jobs.cli._show import as_json, checkpoints_table, event_line, hyperparameters, job_details, jobs_table

EPILOG = """examples:
  rayfit jobs create --model smollm2-135m-instruct --training-file faq.jsonl --suffix faq --follow
  rayfit jobs create --model ft:smollm2-135m-instruct:faq:ftjob-abc --training-file file-0123 --n-epochs 2
  rayfit jobs create --model smollm2-135m-instruct --training-file file-0123 --plan   # resolved values, nothing starts
  rayfit jobs list
  rayfit jobs events ftjob-abc --follow
  rayfit jobs cancel ftjob-abc
"""


def register(subparsers) -> None:
    """Add the `jobs` group."""
    p = subparsers.add_parser(
        "jobs",
        help="create, watch and control fine-tuning jobs on a fine-tuning service",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    _add_create(sub)

    ls = _action(sub, "list", "your jobs, newest first", "rayfit jobs list --metadata team=support")
    ls.add_argument("--limit", type=int, default=20, help="at most this many (default: 20)")
    ls.add_argument("--after", help="the page after this job id")
    ls.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="only jobs with this metadata")
    ls.add_argument("--json", action="store_true", help="print the job objects as JSON")
    ls.set_defaults(run=list_jobs)

    get = _action(sub, "get", "one job: status, resolved hyperparameters, model, error", "rayfit jobs get ftjob-abc")
    get.add_argument("job_id")
    get.add_argument("--json", action="store_true", help="print the job object as JSON")
    get.set_defaults(run=get_job)

    ev = _action(sub, "events", "a job's events, oldest first; --follow until it ends", "rayfit jobs events ftjob-abc -f")
    ev.add_argument("job_id")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends; exit 1 unless it succeeds")
    ev.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --follow (default: 2)")
    ev.set_defaults(run=events)

    for name, help_text in (
        ("cancel", "stop a job and free its workers; nothing is published"),
        ("pause", "checkpoint a running job and stop it; resume continues from the checkpoint"),
        ("resume", "continue a paused job from its checkpoint"),
    ):
        act = _action(sub, name, help_text, f"rayfit jobs {name} ftjob-abc")
        act.add_argument("job_id")
        act.set_defaults(run=control, verb=name)

    ck = _action(sub, "checkpoints", "a job's checkpoints: step, losses, callable name", "rayfit jobs checkpoints ftjob-abc")
    ck.add_argument("job_id")
    ck.add_argument("--json", action="store_true", help="print the checkpoint objects as JSON")
    ck.set_defaults(run=checkpoints)


def _action(sub, name: str, help_text: str, example: str):
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_endpoint_args(p)
    return p


def auto_or(kind):
    """An argparse type: the word `auto` (the service resolves it from the template and the planner), else `kind`."""

    def parse(text: str):
        if text == "auto":
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected 'auto' or a {kind.__name__}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _add_create(sub) -> None:
    c = _action(
        sub,
        "create",
        "start a fine-tuning job; a local --training-file is uploaded first",
        "rayfit jobs create --model smollm2-135m-instruct --training-file faq.jsonl --suffix faq --follow",
    )
    c.add_argument("--model", required=True, help="a base the service may fine-tune, or one of your ft: models (warm start)")
    c.add_argument("--training-file", required=True, help="a file id (file-...) or a local JSONL file to upload")
    c.add_argument("--validation-file", help="a file id or a local JSONL file to upload")
    c.add_argument("--suffix", help="part of the published name ft:<base>:<suffix>:<job-id> (64 characters at most)")
    c.add_argument("--seed", type=int, help="random seed")
    c.add_argument("--method", choices=["supervised", "dpo", "reinforcement"], default="supervised", help="default: supervised")
    c.add_argument("--n-epochs", type=auto_or(int), help="passes over the training file (default: auto)")
    c.add_argument("--batch-size", type=auto_or(int), help="examples per optimizer step (default: auto)")
    c.add_argument("--learning-rate-multiplier", type=auto_or(float), help="multiple of the template's rate (default: auto)")
    c.add_argument("--beta", type=auto_or(float), help="DPO's beta (with --method dpo; default: auto)")
    c.add_argument(
        "--grader",
        metavar="YAML",
        help="with --method reinforcement: a file holding one OpenAI grader (e.g. {type: string_check, name: exact, "
        "input: '{{sample.output_text}}', reference: '{{item.answer}}', operation: eq})",
    )
    c.add_argument("--eval-interval", type=auto_or(int), help="training steps between evaluations (reinforcement)")
    c.add_argument("--eval-samples", type=auto_or(int), help="held-out prompts each evaluation scores (reinforcement)")
    c.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="a label on the job; repeatable")
    c.add_argument(
        "--spec",
        metavar="YAML",
        help="part of a rayfit spec (e.g. train: {max_steps: 40}) sent as the request's rayfit.spec; validated "
        "by the service as `rayfit validate` does",
    )
    c.add_argument("--plan", action="store_true", help="only show the resolved values and the plan (POST /v1/rayfit/plan)")
    c.add_argument("--follow", "-f", action="store_true", help="then follow its events until it ends")
    c.add_argument("--json", action="store_true", help="print the job object as JSON")
    c.set_defaults(run=create)


def pairs(items: list[str], flag: str) -> dict[str, str]:
    """`KEY=VALUE` flags as a dict."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE. Fix: e.g. {flag} team=support.")
        out[key] = value
    return out


def create_body(args) -> dict[str, Any]:
    """The create request's fields (without the files, which may need an upload first) from the flags."""
    hyper = {
        k: v
        for k, v in (
            ("n_epochs", args.n_epochs),
            ("batch_size", args.batch_size),
            ("learning_rate_multiplier", args.learning_rate_multiplier),
            ("beta", args.beta),
            ("eval_interval", args.eval_interval),
            ("eval_samples", args.eval_samples),
        )
        if v is not None
    }
    if "beta" in hyper and args.method != "dpo":
        raise UserError("--beta is a DPO hyperparameter. Fix: add --method dpo, or drop --beta.")
    own = sorted({"eval_interval", "eval_samples"} & hyper.keys())
    if (own or args.grader) and args.method != "reinforcement":
        flag = "--grader" if args.grader else f"--{own[0].replace('_', '-')}"
        raise UserError(f"{flag} is for reinforcement fine-tuning. Fix: add --method reinforcement, or drop {flag}.")
    method: dict[str, Any] = {"hyperparameters": hyper}
    if args.method == "reinforcement":
        if not args.grader:
            raise UserError("--method reinforcement needs a grader. Fix: add --grader grader.yaml (one OpenAI grader).")
        method["grader"] = _mapping_file(args.grader, "grader", "a grader is a mapping (e.g. {type: string_check, ...})")
    body: dict[str, Any] = {"model": args.model, "method": {"type": args.method, args.method: method}}
    for key in ("suffix", "seed"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.metadata:
        body["metadata"] = pairs(args.metadata, "--metadata")
    if args.spec:
        example = "a spec override is a mapping of spec sections (e.g. train: {max_steps: 40})"
        body["rayfit"] = {"spec": _mapping_file(args.spec, "spec override", example)}
    return body


def _mapping_file(path: str, what: str, shape: str) -> dict[str, Any]:
    """The YAML (or JSON) mapping in `path`; a UserError naming the file otherwise."""
    from cluster.spec.reader import read_yaml_file

    data = read_yaml_file(path, what).data
    if not isinstance(data, dict):
        raise UserError(f"{path}: {shape}. Fix: write the {what} as a YAML mapping.")
    return data


def file_id(client, given: str | None) -> str | None:
    """A file id as given, or the id of a local file uploaded now."""
    if given is None or given.startswith("file-") or not Path(given).expanduser().exists():
        return given
    from jobs.cli.files import upload_file

    uploaded = upload_file(client, given)
    print(f"rayfit: uploaded {given} as {uploaded.id}", file=sys.stderr, flush=True)
    return uploaded.id


@api_command
def create(args) -> int:
    """Create (or with --plan only resolve) the job; print it, or follow it to its end."""
    body = create_body(args)
    client = connect(args)
    body["training_file"] = file_id(client, args.training_file)
    if args.validation_file:
        body["validation_file"] = file_id(client, args.validation_file)
    if args.plan:
        answer = rayfit_route(client, "post", "/rayfit/plan", body)
        print(as_json(answer) if args.json else _plan_text(answer))
        return 0
    fields = {
        k: body.pop(k) for k in ("model", "training_file", "validation_file", "suffix", "seed", "metadata", "method") if k in body
    }
    job = client.fine_tuning.jobs.create(**fields, extra_body=body or None)
    print(as_json(job) if args.json else job_details(job))
    if not args.follow:
        print(f"rayfit: follow it with: rayfit jobs events {job.id} --follow", file=sys.stderr)
        return 0
    return _finish(follow(client, job.id))


def _plan_text(answer: dict[str, Any]) -> str:
    hyper = hyperparameters(answer.get("hyperparameters") or {})
    return f"hyperparameters: {hyper}\n{answer.get('text', '')}".rstrip()


@api_command
def list_jobs(args) -> int:
    """One line per job."""
    query: dict[str, Any] = {"limit": args.limit}
    if args.after:
        query["after"] = args.after
    if args.metadata:
        query["metadata"] = pairs(args.metadata, "--metadata")
    page = connect(args).fine_tuning.jobs.list(**query)
    print(as_json(page.data) if args.json else jobs_table(page.data))
    return 0


@api_command
def get_job(args) -> int:
    """One job in full."""
    job = connect(args).fine_tuning.jobs.retrieve(args.job_id)
    print(as_json(job) if args.json else job_details(job))
    return 0


@api_command
def events(args) -> int:
    """The events so far; with --follow, until the job ends (exit 1 unless it succeeded)."""
    client = connect(args)
    if args.follow:
        return _finish(follow(client, args.job_id, poll_s=args.poll))
    for event in new_events(client, args.job_id, None):
        print(event_line(event))
    return 0


@api_command
def control(args) -> int:
    """cancel, pause or resume; prints the job's status after the call."""
    job = getattr(connect(args).fine_tuning.jobs, args.verb)(args.job_id)
    print(f"{job.id} {job.status}")
    return 0


@api_command
def checkpoints(args) -> int:
    """The job's checkpoints, newest first."""
    page = connect(args).fine_tuning.jobs.checkpoints.list(args.job_id, limit=100)
    print(as_json(page.data) if args.json else checkpoints_table(page.data))
    return 0


def _finish(job) -> int:
    """The last word of a followed job: its model, or its error as a `rayfit:` line."""
    if job.status == "succeeded":
        print(f"rayfit: {job.id} succeeded: {job.fine_tuned_model}", file=sys.stderr, flush=True)
        return 0
    error = job.error
    why = f": {error.code}: {error.message}" if error and error.message else ""
    raise UserError(f"job {job.id} ended {job.status}{why}")
