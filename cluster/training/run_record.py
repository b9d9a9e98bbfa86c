"""The run record `run.json`: what the driver knows at the end of a run, for merge, evaluate, serve and people."""

from __future__ import annotations

import json
import time
from typing import Any

from cluster import storage
from cluster.errors import UserError
from cluster.manifest import read_manifest
from cluster.spec import JobSpec, validate_spec
from cluster.training.checkpoints import PREFIX, is_complete, newest_complete, run_uri

RUN_FILE = "run.json"


def complete_checkpoints(run: str) -> list[dict[str, Any]]:
    """Every complete checkpoint in the run folder, oldest first: {uri, step, metrics}."""
    out = []
    for name in storage.list_dirs(run):
        uri = storage.join(run, name)
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and is_complete(uri):
            m = read_manifest(uri)
            out.append({"uri": uri, "step": m["step"], "metrics": m.get("metrics", {})})
    return sorted(out, key=lambda c: c["step"])


def best_checkpoint(checkpoints: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Lowest eval loss; the newest when no checkpoint has one."""
    scored = [c for c in checkpoints if "eval_loss" in c["metrics"]]
    if scored:
        return min(scored, key=lambda c: (c["metrics"]["eval_loss"], -c["step"]))
    return checkpoints[-1] if checkpoints else None


def write_run_record(spec: JobSpec, status: str, **fields: Any) -> dict[str, Any]:
    """Write `{run}/run.json` with the spec, status, best and latest checkpoints and `fields`; returns it."""
    run = run_uri(spec)
    checkpoints = complete_checkpoints(run)
    best = best_checkpoint(checkpoints)
    record = {
        "schema_version": 1, "kind": "run", "name": spec.output.name, "status": status,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.model_dump(mode="json", exclude_unset=True), "run": run,
        "best_checkpoint": best["uri"] if best else None,
        "latest_checkpoint": checkpoints[-1]["uri"] if checkpoints else None,
        "metrics": best["metrics"] if best else {},
        "checkpoints": checkpoints, **fields,
    }
    storage.write_text(storage.join(run, RUN_FILE), json.dumps(record, indent=2, default=str))
    return record


def check_resumable(spec: JobSpec) -> str | None:
    """The checkpoint a resubmitted run continues from, or None; refuses checkpoints of another model or data."""
    resume = newest_complete(run_uri(spec))
    if resume is None:
        return None
    before = validate_spec(read_manifest(resume)["spec"])
    changed = [s for s in ("model", "data") if getattr(before, s) != getattr(spec, s)]
    if changed:
        raise UserError(f"output.name {spec.output.name!r}: {resume} was trained with a different "
                        f"{' and '.join(changed)} section, so this spec cannot resume it. Fix: choose a new output.name, "
                        "or restore the earlier settings to continue that run.")
    return resume
