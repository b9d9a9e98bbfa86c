"""The cache of prepared data that every objective shares: content-hash keys, complete-or-absent folders, loading.

A folder `<cache_dir>/<hash>/` holds `train/`, optionally `eval/` (datasets.save_to_disk) and the report, written
last. SFT saves tokenized rows, DPO/KTO TRL's text rows; both use the same key and folder rules.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cluster import storage
from cluster.data.report import DataReport
from cluster.embedded import cache_root
from cluster.spec import JobSpec

# Bump when the tokenized output of the same inputs changes (rendering, masking, packing), so old caches are not reused.
PIPELINE_VERSION = "3"
REPORT = "report.json"  # written last: a cache folder is complete iff it exists


@dataclass(frozen=True)
class PreparedData:
    """Tokenized datasets saved with datasets.save_to_disk, and the report of how they were made."""

    train_path: str
    eval_path: str | None
    report: DataReport

    def train(self):
        """The training dataset (input_ids, labels, and position_ids when packed)."""
        return load_prepared(self.train_path)

    def eval(self):
        """The eval dataset, or None when there is no held-out data."""
        return load_prepared(self.eval_path) if self.eval_path else None


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about a tokenizer that changes its output: vocabulary, merges, specials, chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        [
            type(tokenizer).__name__,
            tokenizer.chat_template,
            tokenizer.special_tokens_map,
            sorted((i, str(t)) for i, t in tokenizer.added_tokens_decoder.items()),
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256((body + extra).encode()).hexdigest()


def content_hash(spec: JobSpec, tokenizer, digests: list[str]) -> str:
    """The cache key: source bytes, tokenizer, and every data setting that changes the output (not num_proc)."""
    settings = spec.data.model_dump(mode="json", exclude={"num_proc"})
    blob = json.dumps([PIPELINE_VERSION, settings, digests, tokenizer_fingerprint(tokenizer)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_prepared(path: str):
    """A saved dataset (what each Ray worker calls): memory-mapped, never re-tokenized; remote URIs are copied once."""
    from datasets import load_from_disk

    if storage.is_remote(path):
        path = str(storage.cached_copy(path, cache_root() / "prepared-data"))
    return load_from_disk(str(storage.local_path(path)))


def cached(target: str) -> PreparedData | None:
    report_uri = storage.join(target, REPORT)
    if not storage.exists(report_uri):
        return None
    report = DataReport.model_validate_json(storage.read_text(report_uri))
    has_eval = storage.exists(storage.join(target, "eval"))
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if has_eval else None, report)


def save(target: str, train, evalset, report: DataReport) -> None:
    """Write to a temporary folder, then move it into place (local) or upload it with the report last (remote)."""
    if storage.is_remote(target):
        with tempfile.TemporaryDirectory(prefix="rayfit-data-") as tmp:
            _write(Path(tmp), train, evalset)
            storage.upload_dir(Path(tmp), target)
        storage.write_text(storage.join(target, REPORT), report.to_json())
        return

    def build(tmp: Path) -> None:
        _write(tmp, train, evalset)
        (tmp / REPORT).write_text(report.to_json(), encoding="utf-8")

    storage.build_once(storage.local_path(target), build)  # another driver may have finished the same content first


def _write(folder: Path, train, evalset) -> None:
    train.save_to_disk(str(folder / "train"))
    if evalset is not None:
        evalset.save_to_disk(str(folder / "eval"))
