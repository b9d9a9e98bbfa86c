"""`rayfit finetune SPEC.yaml` (`python -m jobs.finetune`): spec -> check data -> plan -> fit -> run.json -> merge -> evaluate.

The driver orchestrates; training runs on Ray Train workers, merge and evaluation as Ray tasks sized by the planner.

Submitted as a Ray job it trains on that cluster; run directly it connects to a running local Ray or starts one.
Submitting the same spec again (same output.name) resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from cluster import storage
from cluster.errors import run_main
from cluster.noise import runtime_env
from cluster.run_folder import run_uri
from cluster.spec import JobSpec, SpecError, load_spec


def main(argv: list[str] | None = None) -> int:
    """Run a fine-tuning job end to end; user errors print one line and exit non-zero (what `ray job submit` runs)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.finetune", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """The job for parsed arguments: `rayfit finetune` and `python -m jobs.finetune` both end here."""
    if args.service_job is None:
        finetune(load_spec(args.spec), args.address)
        return 0
    from cluster.service.driver import ServiceRun, load_job_spec

    service = ServiceRun(args.service_job)
    spec = load_job_spec(args.spec)
    try:
        finetune(spec, args.address, service)
    except BaseException as e:  # the service shows why (a stopped job is marked by the app instead)
        if not isinstance(e, KeyboardInterrupt | SystemExit):
            service.failed(e, run_uri(spec))
        raise
    return 0


def finetune(spec: JobSpec, address: str | None = None, service=None) -> dict:
    """Each step of the job in order; returns the final run record (also written to {run}/run.json). `service` (a
    cluster.service.driver.ServiceRun) is told each step when the job came from the fine-tuning API."""
    import ray

    from cluster.data import prepare_datasets
    from cluster.evaluation.report import markdown
    from cluster.model.load import load_tokenizer
    from cluster.planner import check_fit, check_placement, format_plan, make_plan
    from cluster.run_folder import DATA_REPORT, part, run_uri
    from cluster.tasks import evaluate_on_cluster, merge_on_cluster
    from cluster.training.run_record import check_same_run, write_run_record
    from cluster.training.trainer import fit

    run = run_uri(spec)
    _connect(address, spec)
    if service:
        service.status("running", "Job started: checking data.")
    before = check_same_run(spec)
    _say(
        f"run {run}"
        + (
            f" (submitted before, last status {before['status']}: Ray Train resumes it from its newest complete checkpoint)"
            if before
            else ""
        )
    )
    data = prepare_datasets(spec, load_tokenizer(spec), part(run, "data"))
    storage.write_text(part(run, DATA_REPORT), data.report.to_json())
    print(data.report.to_table(), flush=True)
    if service:
        service.data_report(data.report)
    _say(f"data: {data.train_path} (eval: {data.eval_path})")
    plan = make_plan(spec, dataset_tokens=data.report.train_tokens)
    _say("plan:\n" + format_plan(plan))
    if service:
        service.plan(plan, format_plan(plan))
    check_fit(plan, spec)
    check_placement(plan, ray.nodes())  # before any GPU time: some node must be able to merge and evaluate
    write_run_record(spec, "running", plan=plan.to_json())
    try:
        result = fit(spec, data.train_path, data.eval_path, service.worker_env() if service else None)
    except Exception as e:
        write_run_record(spec, "failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    record = write_run_record(spec, "trained", result, plan=plan.to_json())
    if service and service.pause_requested():
        service.paused(record)
        return write_run_record(spec, "paused", result, plan=plan.to_json())
    shown = {k: round(v, 4) for k, v in record["metrics"].items() if k in ("step", "train_loss", "eval_loss")}
    _say(f"best checkpoint {record['best_checkpoint']} {shown}")
    if spec.merge.enabled:
        record["export"] = merge_on_cluster(record["best_checkpoint"], spec.merge.into, plan.merge)
        _say(f"export {record['export']}")
    if spec.evaluate.enabled:
        tuned = record.get("export") or record["best_checkpoint"]
        record["evaluation"] = evaluate_on_cluster(spec, tuned, part(run, "eval"), plan.evaluate)
        print(markdown(record["evaluation"]).split("\n## Sample")[0].rstrip(), flush=True)
        _say(f"evaluation {part(run, 'eval')}")
    extra = {k: record[k] for k in ("export", "evaluation") if k in record}
    final = write_run_record(spec, "succeeded", result, plan=plan.to_json(), **extra)
    if service:
        service.succeeded(final)
    return final


def _connect(address: str | None, spec: JobSpec) -> None:
    """Join the Ray cluster (the one `ray job submit` points at, RAY_ADDRESS, or --address) or start a local one."""
    import ray

    # Ray's INFO lines from every worker (e.g. each Train report) bury rayfit's progress lines; warnings still show.
    quiet_ray = ray.LoggingConfig(log_level="WARNING")
    if not ray.is_initialized() and address not in (None, "local"):
        ray.init(address=address, logging_config=quiet_ray)
    if not ray.is_initialized() and address is None:
        try:
            ray.init(address="auto", logging_config=quiet_ray)
        except ConnectionError:  # no running cluster (or several, none named): run on this machine alone
            pass
    if not ray.is_initialized():
        ray.init(
            address="local",
            include_dashboard=False,
            logging_config=quiet_ray,  # the dashboard alone costs ~3 GiB
            runtime_env=runtime_env(spec.cluster.use_gpu),
        )
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    problems = storage.shared_storage_problems(spec.output.storage, nodes)
    if problems:
        raise SpecError(problems)


def _say(message: str) -> None:
    print(f"rayfit: {message}", flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The job's arguments, shared by `rayfit finetune` and `python -m jobs.finetune`."""
    p.add_argument("spec", help="the job spec (YAML)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address (default: RAY_ADDRESS, else a running local Ray, else a new local one); "
        "'local' always starts a new local Ray",
    )
    p.add_argument(
        "--service-job",
        default=None,
        metavar="URI",
        help="{storage}/jobs/{job-id} of a fine-tuning API job: report status, events and the published model there",
    )


if __name__ == "__main__":
    sys.exit(main())
