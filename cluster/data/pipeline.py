"""Sources to tokenized datasets and their report: read, convert, dedupe, tokenize, length policy, split, mix, pack."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from cluster.data.drops import Drop, RowProblem
from cluster.data.formats import detect_format, to_sample
from cluster.data.mixing import choose, mix_counts, split_eval
from cluster.data.packing import efficiency, pack
from cluster.data.render import IGNORE, show_mask, special_ids, tokenize_batch
from cluster.data.report import DataReport, SourceSummary
from cluster.data.sources import read_source
from cluster.errors import UserError
from cluster.spec import DataSpec

ROWS_PER_PROC = 200  # below this many rows per process, forking costs more than it saves
COLUMNS = ["input_ids", "labels"]


class DataQualityError(UserError):
    """More rows were dropped than data.max_dropped_fraction allows; `.report` holds the full report."""

    def __init__(self, report: DataReport):
        worst = sorted(report.dropped.items(), key=lambda kv: -kv[1].count)[:3]
        reasons = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in worst)
        super().__init__(f"{report.rows_dropped} of {report.rows_read} rows dropped ({report.dropped_fraction:.1%}), more "
                         f"than data.max_dropped_fraction {report.max_dropped_fraction:.1%}; {reasons}. Fix: repair the "
                         "data (run `rayfit data check SPEC` for every reason with file:line) or raise data.max_dropped_fraction.")
        self.report = report


@dataclass
class Loaded:
    """Sources read and converted: per kept sample its source index, `file:line`, dedupe key and content."""

    samples: list[dict] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    report: DataReport = field(default_factory=DataReport)


def read_all(data: DataSpec) -> Loaded:
    """Read every train and eval source, convert records to samples and drop (with file:line) what is broken."""
    out = Loaded(report=DataReport(max_dropped_fraction=data.max_dropped_fraction, packing=data.packing,
                                   max_seq_len=data.max_seq_len))
    seen: dict[str, str] = {}
    for i, src in enumerate([*data.train, *data.eval]):
        rows = read_source(src)
        fmt = detect_format(rows, src.format)
        summary = SourceSummary(path=src.path, format=fmt, detected=src.format == "auto", rows_read=rows.rows_read)
        (out.report.sources if i < len(data.train) else out.report.eval_sources).append(summary)
        out.digests.append(f"{src.path}|{fmt}|{src.weight}|{src.split}|{rows.digest}")
        for drop in rows.drops:
            out.report.add_drop(drop)
        for rec in rows.records:
            try:
                sample = to_sample(rec.fields, fmt, data.system_prompt)
            except RowProblem as p:
                out.report.add_drop(Drop(p.reason, rec.where, p.detail))
                continue
            key = hashlib.sha1(json.dumps(sample, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            # Duplicates count within train and within eval; eval rows equal to train rows are contamination instead.
            scoped = f"{'t' if i < len(data.train) else 'e'}:{key}"
            if data.dedupe and scoped in seen:
                out.report.add_drop(Drop("duplicate", rec.where, f"same as {seen[scoped]}"))
                continue
            seen.setdefault(scoped, rec.where)
            out.samples.append({"src": i, "where": rec.where, "key": key, **sample})
    out.report.rows_read = sum(s.rows_read for s in [*out.report.sources, *out.report.eval_sources])
    return out


def tokenize(loaded: Loaded, data: DataSpec, tokenizer) -> Dataset:
    """Tokenize every kept sample in parallel (datasets.map num_proc) and apply the length policy."""
    report = loaded.report
    if not loaded.samples:
        raise UserError(f"no usable rows in the data: {report.rows_read} read, all dropped. Fix: run `rayfit data check` "
                        "and repair the reasons it lists.")
    if tokenizer.chat_template is None and any(s["messages"] is not None for s in loaded.samples):
        raise UserError("the tokenizer of model.base has no chat template, but the data has conversations. Fix: use a "
                        "model with a chat template (e.g. an -Instruct model), or set format: text on the sources.")
    ds = Dataset.from_list(loaded.samples)
    procs = max(1, min(data.num_proc or os.cpu_count() or 1, len(ds) // ROWS_PER_PROC))
    ds = ds.map(tokenize_batch, batched=True, batch_size=64, num_proc=procs if procs > 1 else None,
                fn_kwargs={"tokenizer": tokenizer, "specials": sorted(special_ids(tokenizer))},
                remove_columns=["messages", "text"], desc="tokenizing")
    keep, truncated = [], 0
    cols = columns(ds, "length", "trained", "where", "error")
    rendered = [n for n, error in zip(cols[0], cols[3], strict=True) if error is None]
    if rendered:  # before the length policy, so they show what max_seq_len would keep
        arr = np.array(rendered)
        report.token_lengths = {"min": float(arr.min()), **{f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 95, 99)},
                                "max": float(arr.max()), "mean": round(float(arr.mean()), 1)}
    for i, (n, trained, where, error) in enumerate(zip(*cols, strict=True)):
        if error is not None:
            report.add_drop(Drop("template error", where, error))
            continue
        if n > data.max_seq_len:
            if data.too_long == "drop":
                report.add_drop(Drop("too long", where, f"{n} tokens > data.max_seq_len {data.max_seq_len}"))
                continue
            trained = sum(label != IGNORE for label in ds[i]["labels"][: data.max_seq_len])
        if trained < data.min_tokens:
            report.add_drop(Drop("too short", where, f"{trained} trained tokens < data.min_tokens {data.min_tokens}"))
            continue
        truncated += n > data.max_seq_len
        keep.append(i)
    ds = ds.select(keep)
    report.truncated = truncated
    if truncated:
        ds = ds.map(_truncate, batched=True, fn_kwargs={"max_len": data.max_seq_len})
    return ds


def columns(ds: Dataset, *names: str) -> list[list]:
    """Whole columns as Python lists, in one read (indexing a datasets Column item by item is ~1000x slower)."""
    table = ds.select_columns(list(names))[:]
    return [table[n] for n in names]


def _truncate(batch: dict, max_len: int) -> dict:
    ids = [x[:max_len] for x in batch["input_ids"]]
    labels = [x[:max_len] for x in batch["labels"]]
    return {"input_ids": ids, "labels": labels, "length": [len(x) for x in ids],
            "trained": [sum(v != IGNORE for v in x) for x in labels]}


def finish(loaded: Loaded, data: DataSpec, ds: Dataset, tokenizer) -> tuple[Dataset, Dataset | None, DataReport]:
    """Split eval, mix train by weight, pack, and fill in the report."""
    report, rng = loaded.report, random.Random(data.seed)
    n_train_src = len(data.train)
    src, keys, wheres = columns(ds, "src", "key", "where")
    per_source = [[i for i, s in enumerate(src) if s == k] for k in range(n_train_src)]
    eval_idx = [i for i, s in enumerate(src) if s >= n_train_src]
    report.eval_from = "sources" if data.eval else ("split" if data.eval_split > 0 else "none")
    for k, group in enumerate(per_source):
        report.sources[k].rows_kept = len(group)
    if not data.eval:
        held = split_eval([i for group in per_source for i in group], data.eval_split, rng)[1]
        held_set = set(held)
        for k, group in enumerate(per_source):
            report.sources[k].rows_held_out = sum(1 for i in group if i in held_set)
        per_source = [[i for i in group if i not in held_set] for group in per_source]
        eval_idx = held
    for k, s in enumerate(report.eval_sources):
        s.rows_kept = s.rows_used = sum(1 for i in eval_idx if src[i] == n_train_src + k)
    counts = mix_counts([len(g) for g in per_source], [s.weight for s in data.train])
    train_idx = []
    for k, (group, count) in enumerate(zip(per_source, counts, strict=True)):
        report.sources[k].rows_used = count
        train_idx += choose(group, count, rng)
    if not train_idx:
        why = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in report.dropped.items())
        raise UserError(f"no training rows left after checks ({report.rows_read} read; dropped {why or 'none'}). "
                        "Fix: run `rayfit data check SPEC` and repair the data, or adjust data.max_seq_len/too_long.")
    rng.shuffle(train_idx)
    train_keys = {keys[i] for i in train_idx}
    for i in eval_idx:
        if keys[i] in train_keys:
            report.contamination.add(wheres[i])
    _fill_counts(report, ds, train_idx, eval_idx, data, tokenizer)
    train, evalset = ds.select(train_idx), ds.select(eval_idx) if eval_idx else None
    if data.packing:
        train = pack(train, data.max_seq_len)
        evalset = pack(evalset, data.max_seq_len) if evalset is not None else None
    else:
        train = train.select_columns(COLUMNS)
        evalset = evalset.select_columns(COLUMNS) if evalset is not None else None
    report.train_rows = len(train)
    report.packing_efficiency = (efficiency(len(train), report.train_tokens, data.max_seq_len) if data.packing
                                 else report.padded_efficiency)
    return train, evalset, report


def _fill_counts(report: DataReport, ds: Dataset, train_idx: list[int], eval_idx: list[int], data: DataSpec, tokenizer) -> None:
    lengths, trained = columns(ds, "length", "trained")
    report.rows_kept = sum(s.rows_kept for s in [*report.sources, *report.eval_sources])
    report.rows_dropped = sum(e.count for e in report.dropped.values())
    report.dropped_fraction = report.rows_dropped / report.rows_read if report.rows_read else 0.0
    report.train_samples, report.eval_samples = len(train_idx), len(eval_idx)
    report.train_tokens = sum(lengths[i] for i in train_idx)
    report.trained_tokens = sum(trained[i] for i in train_idx)
    report.padded_efficiency = efficiency(len(train_idx), report.train_tokens, data.max_seq_len)
    first = ds[train_idx[0]]
    report.example_where = first["where"]
    report.example = show_mask(tokenizer, first["input_ids"], first["labels"])


def check_threshold(report: DataReport) -> None:
    """Raise DataQualityError when more rows were dropped than the spec allows."""
    if report.dropped_fraction > report.max_dropped_fraction:
        raise DataQualityError(report)
