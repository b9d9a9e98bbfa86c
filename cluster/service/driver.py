"""What a fine-tuning job's driver (`python -m jobs.finetune SPEC --service-job URI`) tells the service: its status,
the data report, the plan, checkpoints, the evaluation and its gate, and, when all passed, the published model.

The driver publishes, not the app: a job that finishes while every replica is down is still published.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cluster import storage
from cluster.run_folder import part
from cluster.service import jobs, names, published
from cluster.service.store import Store

SERVICE_JOB_ENV = "RAYFIT_SERVICE_JOB"  # set on the training workers: where their metrics events go


class ServiceRun:
    """One job's reporter, from its URI `{storage}/jobs/{job-id}`."""

    def __init__(self, job_uri: str):
        self.uri = job_uri.rstrip("/")
        root, self.job_id = self.uri.rsplit("/jobs/", 1)
        self.store = Store(root)
        self.record = self.store.get(jobs.job_path(self.job_id))
        if self.record is None:
            raise FileNotFoundError(f"no job record for {self.uri}")

    def worker_env(self) -> dict[str, str]:
        """Environment for the training workers: their metrics events and the pause flag are found from it."""
        return {SERVICE_JOB_ENV: self.uri}

    def status(self, status: str, message: str | None = None, **fields: Any) -> None:
        jobs.set_status(self.store, self.job_id, status, message, **fields)

    def event(self, message: str, data: Any = None) -> None:
        jobs.add_event(self.store, self.job_id, message, data=data)

    def data_report(self, report) -> None:
        r = json.loads(report.to_json())
        keep = ("rows_read", "rows_kept", "rows_dropped", "train_samples", "eval_samples", "train_tokens", "trained_tokens")
        summary = {k: r[k] for k in keep if k in r}
        summary["dropped"] = {reason: e["count"] for reason, e in r.get("dropped", {}).items()}
        self.event(
            f"Data report: {r.get('rows_kept')} of {r.get('rows_read')} rows kept, {r.get('train_tokens')} training tokens.",
            {"data_report": summary},
        )

    def plan(self, plan, text: str) -> None:
        self.event("Plan:\n" + text, {"plan": json.loads(json.dumps(plan.to_json(), default=str))})

    def pause_requested(self) -> bool:
        return self.store.exists(f"jobs/{self.job_id}/pause")

    def paused(self, record: dict[str, Any]) -> None:
        """Paused: the run stopped at its newest checkpoint, which a resumed attempt continues from."""
        steps = [c["step"] for c in record.get("checkpoints", [])]
        step = max(steps) if steps else None
        where = f"at step {step}" if step is not None else "before its first checkpoint"
        self.status("paused", f"Job paused {where}; resume continues from there.", paused_at_step=step)

    def succeeded(self, record: dict[str, Any]) -> None:
        """Record checkpoints, the evaluation and its gate, then publish (model record written last)."""
        model = self.record["fine_tuned_model"]
        for ckpt in record.get("checkpoints", []):
            jobs.add_checkpoint(
                self.store,
                self.job_id,
                {
                    "step": ckpt["step"],
                    "uri": ckpt["uri"],
                    "metrics": ckpt.get("metrics", {}),
                    "created_at": int(time.time()),
                    "fine_tuned_model_checkpoint": names.checkpoint_name(model, ckpt["step"]),
                },
            )
        evaluation = record.get("evaluation")
        if evaluation:
            self._evaluation(evaluation)
        results = self._result_file(record)
        published.publish(self.store, model, record["best_checkpoint"], self.record["parent"], self.record["tenant"], self.job_id)
        tokens = self._trained_tokens()
        self.status(
            "succeeded",
            f"Job succeeded: published {model}.",
            fine_tuned_model=model,
            trained_tokens=tokens,
            result_files=[results],
        )

    def failed(self, error: BaseException, run: str) -> None:
        """Failed, with `eval_regression` when the evaluation gate refused the model (its report says so)."""
        report = _read_json(storage.join(part(run, "eval"), "report.json"))
        gate = (report or {}).get("gate")
        message = str(error)[-2000:] or type(error).__name__
        if gate and not gate.get("passed", True):
            self._evaluation(report)
            code, message = "eval_regression", f"{message} Metrics (base -> tuned): {_moved(report)}."
        else:
            code = "job_failed"
        self.status("failed", f"Job failed: {message}", error={"code": code, "message": message, "param": None})

    def _evaluation(self, report: dict[str, Any]) -> None:
        """The evaluation's metrics (base and tuned) as one event, and the gate's decision as another."""
        base, tuned = report.get("base", {}), report.get("tuned", {})
        shown = {k: {"base": base.get(k), "tuned": tuned.get(k)} for k in tuned if isinstance(tuned.get(k), int | float)}
        self.event(f"Evaluation (base -> tuned): {_moved(report)}", {"evaluation": shown})
        gate = report.get("gate")
        if gate:
            self.event(_gate_line(gate), {"gate": gate})

    def _trained_tokens(self) -> int | None:
        found = jobs.latest_metrics(self.store, self.job_id)
        return int(found["tokens_seen"]) if found and found.get("tokens_seen") is not None else None

    def _result_file(self, record: dict[str, Any]) -> str:
        """A `fine-tune-results` file of the tenant: step metrics and the base-vs-tuned report, as JSON."""
        file_id = f"file-{self.job_id.removeprefix('ftjob-')}"
        history = _read_json(part(record["run"], "log_history.json")) or []
        body = json.dumps({"job": self.job_id, "log_history": history, "evaluation": record.get("evaluation")}, default=str)
        self.store.put_text(f"blobs/{file_id}.json", body)
        self.store.put(
            f"records/files/{file_id}.json",
            {
                "id": file_id,
                "blob": f"blobs/{file_id}.json",
                "bytes": len(body.encode()),
                "created_at": int(time.time()),
                "filename": f"{self.job_id}-results.json",
                "purpose": "fine-tune-results",
                "status": "processed",
                "tenant": self.record["tenant"],
                "rows": len(history),
            },
        )
        return file_id


def _moved(report: dict[str, Any]) -> str:
    """`eval_loss 2.61 -> 0.41, exact_match 0 -> 0.5` for every metric both models were scored on."""
    base, tuned = report.get("base", {}), report.get("tuned", {})
    numbers = [k for k, v in tuned.items() if isinstance(v, int | float) and isinstance(base.get(k), int | float)]
    return ", ".join(f"{k} {base[k]:.4g} -> {tuned[k]:.4g}" for k in numbers)


def _gate_line(gate: dict[str, Any]) -> str:
    """The gate's decision in words: the regression allowed and, when asked for, the improvement required."""
    verdict, metric = "passed" if gate.get("passed") else "failed", gate.get("metric")
    parts = []
    if gate.get("max_regression") is not None and gate.get("worse_by") is not None:
        worse = gate["worse_by"]
        moved = f"worse than base by {worse:.1%}" if worse > 0 else f"better than base by {-worse:.1%}"
        parts.append(f"tuned {metric} is {moved} (max_regression {gate['max_regression']:.1%})")
    if gate.get("min_improvement") is not None:
        low, high = gate.get("difference_interval") or (None, None)
        span = f"[{low:+.4g}, {high:+.4g}]" if low is not None else "not measured"
        parts.append(f"tuned - base on {metric} is in {span} (95%), required above {gate['min_improvement']}")
    return f"Gate {verdict}: " + ("; ".join(parts) or f"on {metric}") + "."


def _read_json(uri: str) -> Any:
    try:
        return json.loads(storage.read_text(uri))
    except (FileNotFoundError, ValueError):
        return None


def load_job_spec(uri: str):
    """The resolved spec the app wrote for the job (local or in object storage), validated again."""
    import yaml

    from cluster.spec import load_spec, validate_spec

    if not storage.is_remote(uri):
        return load_spec(uri)
    return validate_spec(yaml.safe_load(storage.read_text(uri)), source=uri)
