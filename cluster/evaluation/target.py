"""What `jobs.evaluate URI` evaluates: an export, a checkpoint, or a run folder (its export, else its best checkpoint)."""

from __future__ import annotations

from cluster import storage
from cluster.manifest import MANIFEST, read_manifest
from cluster.run_folder import find_checkpoint, part, run_of
from cluster.spec import JobSpec


def resolve_target(uri: str) -> tuple[str, JobSpec, str]:
    """(tuned URI, the spec it was trained with, its run folder) for an export, a checkpoint or a run folder.

    The run folder holds the tokenized data (`RUN/data`, reused) and is where reports go (`RUN/eval`).
    """
    uri = storage.normalize(uri)
    if storage.exists(storage.join(uri, MANIFEST)):
        tuned, manifest = uri, read_manifest(uri)
    elif storage.exists(storage.join(part(uri, "export"), MANIFEST)):
        tuned = part(uri, "export")
        manifest = read_manifest(tuned)
    else:
        tuned, manifest = find_checkpoint(uri)  # raises UserError naming what is missing
    return tuned, JobSpec.model_validate(manifest["spec"]), run_of(tuned)
