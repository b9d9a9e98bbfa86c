"""The run record `run.json`: what the driver knows at the end of a run, for merge, evaluate, serve and people."""

from __future__ import annotations

import time
from typing import Any

from cluster import run_folder
from cluster.errors import UserError
from cluster.manifest import read_manifest
from cluster.spec import JobSpec, validate_spec


def write_run_record(spec: JobSpec, status: str, **fields: Any) -> dict[str, Any]:
    """Write `{run}/run.json` with the spec, status, best and latest checkpoints and `fields`; returns it."""
    run = run_folder.run_uri(spec)
    found = run_folder.checkpoints(run)
    best, latest = run_folder.best(found), run_folder.newest(found)
    record = {
        "schema_version": 1, "kind": "run", "name": spec.output.name, "status": status,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.model_dump(mode="json", exclude_unset=True), "run": run,
        "best_checkpoint": best.uri if best else None,
        "latest_checkpoint": latest.uri if latest else None,
        "metrics": best.metrics if best else {},
        "checkpoints": [c.to_json() for c in found], **fields,
    }
    run_folder.write_record(run, record)
    return record


def check_resumable(spec: JobSpec) -> str | None:
    """The checkpoint a resubmitted run continues from, or None; refuses checkpoints of another model or data."""
    latest = run_folder.newest(run_folder.checkpoints(run_folder.run_uri(spec)))
    if latest is None:
        return None
    before = validate_spec(read_manifest(latest.uri)["spec"])
    changed = [s for s in ("model", "data") if getattr(before, s) != getattr(spec, s)]
    if changed:
        raise UserError(f"output.name {spec.output.name!r}: {latest.uri} was trained with a different "
                        f"{' and '.join(changed)} section, so this spec cannot resume it. Fix: choose a new output.name, "
                        "or restore the earlier settings to continue that run.")
    return latest.uri
