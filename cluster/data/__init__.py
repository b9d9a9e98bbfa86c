"""Data: every source and record shape to chat-templated, assistant-masked, packed tokens, with a quality report.

API (the training job and workers call these):

    from cluster.data import prepare_datasets, load_prepared, check_data, PreparedData, DataReport

    prepared = prepare_datasets(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData
        # on the driver, once. Saves datasets.save_to_disk folders under cache_dir/<content-hash>/{train,eval}
        # (cache_dir: local path, file://, s3:// or gs:// URI; use {storage}/{name}/data). Same sources + tokenizer
        # + data settings => same hash => the saved result is reused without tokenizing.
        # prepared.train_path: str, prepared.eval_path: str | None, prepared.report: DataReport,
        # prepared.train() / prepared.eval() -> datasets.Dataset
    load_prepared(path: str) -> datasets.Dataset
        # on each Ray worker: memory-maps the saved folder (remote URIs copied once per node); no re-tokenization
    check_data(spec: JobSpec, tokenizer=None) -> DataReport
        # `rayfit data check`: every check, nothing saved; tokenizer loaded from spec.model.base when None
    report.to_json() -> str; report.to_table() -> str   # write to_json() to {storage}/{name}/data_report.json
    stream_source(src: SourceSpec, digest=None) -> Iterator[Record | Drop]
        # every reader (jsonl/json/csv/parquet, folders, save_to_disk, hf:, s3://, gs://, embedded:) as one stream of
        # Record(where="file:line", fields=dict) and per-row Drop(reason, where, detail); never reads a file whole

Columns: input_ids (list[int]), labels (list[int]; -100 except assistant turns including their end-of-turn token;
every token for `text` records), and when data.packing, position_ids restarting at 0 per sample. Every row has at
most data.max_seq_len tokens. Packed rows must be fed padding-free (batch of one row, or rows concatenated with their
position_ids) with use_cache=False, so that samples never attend to each other.

Rendering and tokenizing run on Ray Data when Ray is initialised (the finetune job), else through datasets.map.

Errors: UserError for unreadable sources, unknown/ambiguous shapes, shapes SFT cannot train (preference pairs:
the fix is train.objective: dpo), tool calls with a template that has no tool support; ContaminationError under
data.near_duplicates.contamination: fail; DataQualityError (a UserError, with
`.report`) when the dropped fraction exceeds data.max_dropped_fraction — raised before anything is saved.
"""

from cluster.data.pipeline import DataQualityError
from cluster.data.prepare import PreparedData, check_data, load_prepared, prepare_datasets
from cluster.data.report import DataReport
from cluster.data.sources import stream_source

__all__ = ["DataQualityError", "DataReport", "PreparedData", "check_data", "load_prepared", "prepare_datasets", "stream_source"]
