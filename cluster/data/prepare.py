"""The data layer's entry points: prepare (once, cached by content hash) and check only, for any objective.

Each objective's recipe (cluster/objectives/) owns what its data becomes: SFT tokenized and packed rows, DPO/KTO
TRL's text rows, GRPO prompts with their reference fields. The cache they share is cache.py.
"""

from __future__ import annotations

from cluster.data.cache import PreparedData, load_prepared
from cluster.data.report import DataReport
from cluster.spec import JobSpec


def prepare_datasets(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData:
    """Prepare the spec's data once into `cache_dir/<content-hash>/{train,eval}` (local path or URI) and return it.

    The same sources, tokenizer and data settings give the same hash, and the saved result is reused. Raises
    UserError for unreadable sources, and DataQualityError (a UserError with `.report`) when more rows are dropped
    than data.max_dropped_fraction allows; nothing is saved then.
    """
    from cluster.objectives import recipe_for  # the recipes build on this layer, so they are looked up when called

    return recipe_for(spec).prepare(spec, tokenizer, cache_dir)


def check_data(spec: JobSpec, tokenizer=None) -> DataReport:
    """Run every data check without saving anything; raises DataQualityError when too many rows are dropped."""
    from cluster.model.load import load_tokenizer
    from cluster.objectives import recipe_for

    return recipe_for(spec).check(spec, tokenizer if tokenizer is not None else load_tokenizer(spec))


__all__ = ["PreparedData", "check_data", "load_prepared", "prepare_datasets"]
