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

    def paused(self) -> None:
        self.status("paused", "Job paused after a checkpoint; resume continues from it.")

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
        if gate and not gate.get("passed", True):
            self._evaluation(report)
            code = "eval_regression"
        else:
            code = "job_failed"
        message = str(error)[-2000:] or type(error).__name__
        self.status("failed", f"Job failed: {message}", error={"code": code, "message": message, "param": None})

    def _evaluation(self, report: dict[str, Any]) -> None:
        base, tuned = report.get("base", {}), report.get("tuned", {})
        shown = {k: {"base": base.get(k), "tuned": tuned.get(k)} for k in tuned if isinstance(tuned.get(k), int | float)}
        moved = ", ".join(f"{k} {v['base']} -> {v['tuned']}" for k, v in shown.items())
        self.event(f"Evaluation: {moved}", {"evaluation": shown})
        gate = report.get("gate")
        if gate:
            verdict = "passed" if gate.get("passed") else "failed"
            self.event(
                f"Gate {verdict}: tuned {gate.get('metric')} is worse than base by {gate.get('worse_by')} "
                f"(max_regression {gate.get('max_regression')}).",
                {"gate": gate},
            )

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
