"""The run record `run.json`: what the driver knows about a run, for merge, evaluate, serve and people.

Its checkpoints come from Ray Train's `Result` (the best `keep_checkpoints` it kept) and their manifests, not from
listing storage; it is written when the job starts, so a resubmission knows which spec the run was started with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cluster import run_folder, storage
from cluster.errors import UserError
from cluster.sharding import SHARDINGS
from cluster.spec import JobSpec, validate_spec


def result_checkpoints(run: str, result) -> list[run_folder.CheckpointInfo]:
    """The complete checkpoints Ray Train kept for the run (`result.best_checkpoints`), oldest first."""
    return run_folder.described([storage.join(run, Path(ckpt.path).name) for ckpt, _ in result.best_checkpoints])


def write_run_record(spec: JobSpec, status: str, result=None, **fields: Any) -> dict[str, Any]:
    """Write `{run}/run.json` with the spec, status, best and latest checkpoints and `fields`; returns it.

    `result` is what `fit()` returned; without one (the job starting, or training failed) the checkpoints of the
    previous record are kept.
    """
    run = run_folder.run_uri(spec)
    before = run_folder.read_record(run) or {}
    if result is not None:
        found = result_checkpoints(run, result)
        best, latest = run_folder.best(found), run_folder.newest(found)
        known = {
            "best_checkpoint": best.uri if best else None,
            "latest_checkpoint": latest.uri if latest else None,
            "metrics": best.metrics if best else {},
            "checkpoints": [c.to_json() for c in found],
        }
    else:
        known = {
            k: before.get(k, default)
            for k, default in (("best_checkpoint", None), ("latest_checkpoint", None), ("metrics", {}), ("checkpoints", []))
        }
    record = {
        "schema_version": 1,
        "kind": "run",
        "name": spec.output.name,
        "status": status,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.model_dump(mode="json", exclude_unset=True),
        "run": run,
        **known,
        **fields,
    }
    run_folder.write_record(run, record)
    return record


def check_same_run(spec: JobSpec) -> dict[str, Any] | None:
    """The record of an earlier submission of this run, or None; refuses a spec with another model or data section,
    whose checkpoints it could not continue from."""
    before = run_folder.read_record(run_folder.run_uri(spec))
    if before is None:
        return None
    earlier = validate_spec(before["spec"])
    changed = [s for s in ("model", "data") if getattr(earlier, s) != getattr(spec, s)]
    if changed:
        raise UserError(
            f"output.name {spec.output.name!r}: the run at {before['run']} was started with a different "
            f"{' and '.join(changed)} section, so this spec cannot resume it. Fix: choose a new output.name, "
            "or restore the earlier settings to continue that run."
        )
    was, now = SHARDINGS[earlier.cluster.sharding].engine, SHARDINGS[spec.cluster.sharding].engine
    if was != now:
        raise UserError(
            f"output.name {spec.output.name!r}: the run at {before['run']} was trained with cluster.sharding "
            f"{earlier.cluster.sharding}, whose resume state (optimizer and sharded weights) {spec.cluster.sharding} "
            f"cannot read. Fix: keep cluster.sharding: {earlier.cluster.sharding} to continue it, or choose a new "
            "output.name (its checkpoints still merge and serve as they are)."
        )
    return before
