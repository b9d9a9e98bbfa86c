"""The data layer's entry points: prepare (tokenize once, cached by content hash), check only; the cache is cache.py."""

from __future__ import annotations

from cluster import storage
from cluster.data.assemble import finish
from cluster.data.cache import PreparedData, cached, content_hash, load_prepared, save
from cluster.data.pipeline import check_threshold, read_all, tokenize
from cluster.data.report import DataReport
from cluster.errors import UserError
from cluster.spec import JobSpec


def prepare_datasets(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData:
    """Tokenize the spec's data once into `cache_dir/<content-hash>/{train,eval}` (local path or URI) and return it.

    The same sources, tokenizer and data settings give the same hash, and the saved result is reused. Raises
    UserError for unreadable sources, and DataQualityError (a UserError with `.report`) when more rows are dropped
    than data.max_dropped_fraction allows; nothing is saved then.
    """
    if spec.train.objective == "grpo":
        from cluster.data.prompts import check_prompts
        from cluster.spec.grpo import TRAINING_PENDING

        check_prompts(spec)
        raise UserError(TRAINING_PENDING)
    if spec.train.objective != "sft":  # DPO/KTO rows stay text: TRL's trainers template and tokenize them
        from cluster.data.preference_prepare import prepare_preferences

        return prepare_preferences(spec, tokenizer, cache_dir)
    loaded = read_all(spec.data)
    key = content_hash(spec, tokenizer, loaded.digests)
    target = storage.join(storage.normalize(cache_dir), key)
    found = cached(target)
    if found is not None:
        return found
    ds = tokenize(loaded, spec.data, tokenizer)
    train, evalset, report = finish(loaded, spec.data, ds, tokenizer)
    report.hash = key
    check_threshold(report)
    save(target, train, evalset, report)
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if evalset is not None else None, report)


def check_data(spec: JobSpec, tokenizer=None) -> DataReport:
    """Run every data check without saving anything; raises DataQualityError when too many rows are dropped."""
    if spec.train.objective == "grpo":  # prompts and their reference fields; TRL's GRPOTrainer tokenizes
        from cluster.data.prompts import check_prompts

        return check_prompts(spec)
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


__all__ = ["PreparedData", "check_data", "load_prepared", "prepare_datasets"]
