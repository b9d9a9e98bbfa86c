"""The two models every evaluation compares, loaded one way for every objective: the base, and the tuned export or
checkpoint (verified against its manifest), in the evaluation dtype and on the GPU when there is one."""

from __future__ import annotations

import torch

from cluster import storage
from cluster.errors import UserError
from cluster.manifest import read_manifest
from cluster.merge.export import verified_copy
from cluster.merge.weights import merged_model, spec_as_trained
from cluster.model import load
from cluster.spec import JobSpec


def eval_dtype(spec: JobSpec) -> torch.dtype:
    """The dtype both models are scored in: the spec's on GPU, float32 on CPU (as training there)."""
    return load.train_dtype(spec, torch.cuda.is_available())


def load_base(spec: JobSpec):
    """The untuned base model in the evaluation dtype, at the spec's revision."""
    return _ready(load.load_base(spec, eval_dtype(spec)))


def load_tuned(uri: str, spec: JobSpec):
    """The tuned model: an export loads as it is; a checkpoint is merged in memory the way the spec merges.

    Either is refused (UserError naming the file) when its files do not match its manifest's checksums."""
    uri = storage.normalize(uri)
    manifest = read_manifest(uri)
    if manifest.get("kind") not in ("export", "checkpoint"):
        raise UserError(f"{uri} is a rayfit {manifest.get('kind')!r}; evaluation takes an export or a checkpoint.")
    folder = verified_copy(uri, manifest)
    if manifest["kind"] == "export":
        model = load.load_folder_model(folder, eval_dtype(spec), spec)
    else:
        model = merged_model(folder, spec_as_trained(manifest), spec.merge.into).to(eval_dtype(spec))
    return _ready(model)


def _ready(model):
    model.eval()
    return model.to("cuda") if torch.cuda.is_available() else model
