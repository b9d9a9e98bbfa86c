"""Rendering and tokenizing on the cluster with Ray Data: `map_batches` over actors that each hold the tokenizer,
so a large dataset is tokenized by every CPU of the cluster instead of by one process on the head node."""

from __future__ import annotations

import contextlib

import pyarrow as pa
from datasets import Dataset

from cluster.data.render import tokenize_batch

BATCH = 256
SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int64())),
        ("labels", pa.list_(pa.int64())),
        ("length", pa.int64()),
        ("trained", pa.int64()),
        ("error", pa.string()),
        ("window", pa.int64()),
        ("src", pa.int64()),
        ("where", pa.string()),
        ("key", pa.string()),
    ]
)


class _Tokenize:
    """A Ray Data actor: builds nothing per batch; the tokenizer arrives once, with the constructor."""

    def __init__(self, kwargs: dict):
        self.kwargs = kwargs

    def __call__(self, batch: dict) -> pa.Table:
        plain = {k: [v.item() if hasattr(v, "item") else v for v in values] for k, values in batch.items()}
        return pa.Table.from_pydict(tokenize_batch(plain, **self.kwargs), schema=SCHEMA)


@contextlib.contextmanager
def ordered_quietly():
    """Keep rows in input order (the eval split and mixing are seeded by position) and Ray Data's progress bars off
    (without a terminal they become a log line every few seconds; the report carries the counts), restoring the
    settings after."""
    import ray.data

    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False  # the report is the output
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = before


def tokenize_on_ray(samples: list[dict], kwargs: dict, workers: int | None) -> Dataset:
    """Samples (src, where, key, sample) tokenized by `workers` Ray actors (default: the cluster's CPUs), in order."""
    import ray
    import ray.data

    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    workers = max(1, min(workers, -(-len(samples) // BATCH)))
    with ordered_quietly():
        ds = ray.data.from_items(samples).map_batches(
            _Tokenize,
            fn_constructor_kwargs={"kwargs": kwargs},
            batch_size=BATCH,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        tables = ray.get(ds.to_arrow_refs())
    table = (
        pa.concat_tables([t.select(SCHEMA.names).cast(SCHEMA) for t in tables if t.num_rows]) if tables else SCHEMA.empty_table()
    )
    return Dataset(table)
