"""merge_checkpoint: a checkpoint in, one self-describing deployable export out, reused when it already exists."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from cluster import storage
from cluster.errors import UserError
from cluster.manifest import MANIFEST, check_artefact, read_manifest, verify, write_manifest
from cluster.merge.stream import stream_merge, streaming_blocker
from cluster.merge.weights import merged_model, spec_as_trained
from cluster.model.load import load_folder_tokenizer
from cluster.run_folder import find_checkpoint, local_copy, part, run_of
from cluster.spec import JobSpec

log = logging.getLogger(__name__)
INTO = ("dequantized", "original")


def default_export_uri(checkpoint_uri: str) -> str:
    """Where an export goes by default: `export/` in the run folder, next to the checkpoints."""
    return part(run_of(checkpoint_uri), "export")


def merge_checkpoint(checkpoint_uri: str, into: str = "dequantized", out_uri: str | None = None) -> str:
    """Merge a checkpoint (or a run's best checkpoint) into a full model export and return the export URI.

    Idempotent: an export at `out_uri` made from the same checkpoint the same way is reused as it is.
    `into` matters for QLoRA only: "dequantized" (the 4-bit base the adapter was trained against) or "original".
    """
    if into not in INTO:
        raise UserError(f"--into {into!r} is not one of {', '.join(INTO)}. Fix: use --into dequantized (default) or original.")
    checkpoint_uri, manifest = find_checkpoint(checkpoint_uri)
    spec = spec_as_trained(manifest)
    into = into if spec.model.method == "qlora" else None  # only QLoRA has a choice of base
    out_uri = storage.normalize(out_uri or default_export_uri(checkpoint_uri))
    source_id = _manifest_id(checkpoint_uri)
    if _matching_export(out_uri, checkpoint_uri, source_id, into):
        log.info("export %s already matches %s; reusing it", out_uri, checkpoint_uri)
        return out_uri

    ckpt_dir = verified_copy(checkpoint_uri, manifest)
    blocker = streaming_blocker(ckpt_dir, spec)
    if blocker is None:
        save = partial(stream_merge, ckpt_dir, spec, into or "dequantized", max_shard_size=_bytes(spec.merge.max_shard_size))
    else:
        log.info("merging in memory: %s", blocker)
        model = merged_model(ckpt_dir, spec, into or "dequantized")
        save = partial(_save_model, model, max_shard_size=spec.merge.max_shard_size)
    fields = {
        k: manifest.get(k)
        for k in ("spec", "base_model", "method", "dtype", "step", "metrics", "adapter_config", "quantization", "lineage")
    }
    fields.update(source_checkpoint=checkpoint_uri, source_manifest_sha256=source_id, merged_into=into)
    _write_export(save, ckpt_dir, spec, out_uri, fields)
    log.info("wrote export %s from %s", out_uri, checkpoint_uri)
    return out_uri


def verified_copy(uri: str, manifest: dict) -> Path:
    """A local copy of the checkpoint or export at `uri`, refused (UserError naming the files) when its files do not
    match the checksums in its manifest: a damaged, half-copied or tampered artefact is never loaded."""
    folder = local_copy(uri)
    check_artefact(folder, f"{manifest.get('kind', 'artefact')} {uri}", manifest)
    return folder


def _manifest_id(checkpoint_uri: str) -> str:
    """The checkpoint's manifest bytes hashed: it lists every file's checksum, so it identifies the checkpoint."""
    return hashlib.sha256(storage.read_text(storage.join(checkpoint_uri, MANIFEST)).encode()).hexdigest()


def _matching_export(out_uri: str, checkpoint_uri: str, source_id: str, into: str | None) -> bool:
    if not storage.exists(storage.join(out_uri, MANIFEST)):
        return False
    existing = read_manifest(out_uri)
    same = (
        existing.get("kind") == "export"
        and existing.get("source_manifest_sha256") == source_id
        and existing.get("merged_into") == into
    )
    if same and not storage.is_remote(out_uri):
        same = not verify(storage.local_path(out_uri), existing)  # a local export damaged since is rebuilt
    if not same:
        log.info("export %s was made from another checkpoint or another base; replacing it", out_uri)
    return same


def _save_model(model, out_dir: Path, max_shard_size: str) -> None:
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)


def _bytes(size: str) -> int:
    from transformers.utils.hub import convert_file_size_to_int

    return convert_file_size_to_int(size)


def _write_export(save, ckpt_dir: Path, spec: JobSpec, out_uri: str, fields: dict) -> None:
    """Save weights (`save(folder)`), tokenizer and manifest in a temporary folder, then move it into place (manifest
    last)."""
    local_parent = storage.local_path(out_uri).parent if not storage.is_remote(out_uri) else None
    if local_parent is not None:
        local_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=local_parent))
    try:
        save(tmp)
        load_folder_tokenizer(ckpt_dir, spec).save_pretrained(tmp)
        manifest = write_manifest(tmp, "export", dtype=spec.model.dtype, **{k: v for k, v in fields.items() if k != "dtype"})
        _readable(tmp)
        if local_parent is None:
            text = (tmp / MANIFEST).read_text()
            (tmp / MANIFEST).unlink()
            storage.upload_dir(tmp, out_uri)
            storage.write_text(storage.join(out_uri, MANIFEST), text)
        else:
            target = storage.local_path(out_uri)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        log.debug("export manifest lists %d files", len(manifest["files"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readable(folder: Path) -> None:
    """Give the export ordinary permissions: mkdtemp/mkstemp make it owner-only, and servers often run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for p in folder.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
