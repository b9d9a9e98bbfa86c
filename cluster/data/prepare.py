"""The data layer's entry points: prepare (tokenize once, cached by content hash), load on workers, check only."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cluster import storage
from cluster.data.assemble import finish
from cluster.data.pipeline import check_threshold, read_all, tokenize
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


def prepare_datasets(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData:
    """Tokenize the spec's data once into `cache_dir/<content-hash>/{train,eval}` (local path or URI) and return it.

    The same sources, tokenizer and data settings give the same hash, and the saved result is reused. Raises
    UserError for unreadable sources, and DataQualityError (a UserError with `.report`) when more rows are dropped
    than data.max_dropped_fraction allows; nothing is saved then.
    """
    if spec.train.objective != "sft":  # DPO/KTO rows stay text: TRL's trainers template and tokenize them
        from cluster.data.preference_prepare import prepare_preferences

        return prepare_preferences(spec, tokenizer, cache_dir)
    loaded = read_all(spec.data)
    key = content_hash(spec, tokenizer, loaded.digests)
    target = storage.join(storage.normalize(cache_dir), key)
    cached = _cached(target)
    if cached is not None:
        return cached
    ds = tokenize(loaded, spec.data, tokenizer)
    train, evalset, report = finish(loaded, spec.data, ds, tokenizer)
    report.hash = key
    check_threshold(report)
    _save(target, train, evalset, report)
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if evalset is not None else None, report)


def check_data(spec: JobSpec, tokenizer=None) -> DataReport:
    """Run every data check without saving anything; raises DataQualityError when too many rows are dropped."""
    if tokenizer is None:
        from cluster.model.load import load_tokenizer

        tokenizer = load_tokenizer(spec)
    if spec.train.objective != "sft":
        from cluster.data.preference_prepare import check_preferences

        return check_preferences(spec, tokenizer)
    loaded = read_all(spec.data)
    ds = tokenize(loaded, spec.data, tokenizer)
    report = finish(loaded, spec.data, ds, tokenizer)[2]
    report.hash = content_hash(spec, tokenizer, loaded.digests)
    check_threshold(report)
    return report


def load_prepared(path: str):
    """A saved dataset (what each Ray worker calls): memory-mapped, never re-tokenized; remote URIs are copied once."""
    from datasets import load_from_disk

    if storage.is_remote(path):
        path = str(storage.cached_copy(path, cache_root() / "prepared-data"))
    return load_from_disk(str(storage.local_path(path)))


def _cached(target: str) -> PreparedData | None:
    report_uri = storage.join(target, REPORT)
    if not storage.exists(report_uri):
        return None
    report = DataReport.model_validate_json(storage.read_text(report_uri))
    has_eval = storage.exists(storage.join(target, "eval"))
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if has_eval else None, report)


def _save(target: str, train, evalset, report: DataReport) -> None:
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
