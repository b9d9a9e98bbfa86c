"""Sources to tokenized samples: stream and convert every source (dropping with file:line what is broken), dedupe,
find near-duplicates, then render and tokenize (on Ray Data when Ray is running) with the length policy."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from cluster.data.drops import Drop, RowProblem
from cluster.data.formats import DETECT_ROWS, detect_format, refuse_untrainable, to_sample
from cluster.data.mapping import apply_fields
from cluster.data.near_dups import near_pairs, sample_text
from cluster.data.render import IGNORE, check_tool_support, special_ids, tokenize_batch
from cluster.data.report import DataReport, SourceSummary
from cluster.data.sources import Record, SourceRows, stream_source
from cluster.errors import UserError
from cluster.spec import DataSpec
from cluster.spec.data import SourceSpec

ROWS_PER_PROC = 200  # below this many rows per process, forking costs more than it saves
# Below this many samples, rendering and tokenizing in this process is done before Ray Data's tokenizer actors have
# started and loaded the tokenizer: about 4 s, which only a cluster's many CPUs win back, over more rows
# (benchmarks/results/data_prepare-{500,2000,5000}.json: 5,000 rows took 1.9 s here, 5.3 s on Ray Data).
ROWS_FOR_RAY = 10_000
COLUMNS = ["input_ids", "labels"]


class DataQualityError(UserError):
    """More rows were dropped than data.max_dropped_fraction allows; `.report` holds the full report."""

    def __init__(self, report: DataReport):
        worst = sorted(report.dropped.items(), key=lambda kv: -kv[1].count)[:3]
        reasons = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in worst)
        super().__init__(
            f"{report.rows_dropped} of {report.rows_read} rows dropped ({report.dropped_fraction:.1%}), more "
            f"than data.max_dropped_fraction {report.max_dropped_fraction:.1%}; {reasons}. Fix: repair the "
            "data (run `rayfit data check SPEC` for every reason with file:line) or raise data.max_dropped_fraction."
        )
        self.report = report


@dataclass
class Loaded:
    """Sources read and converted: per kept sample its source index, `file:line`, dedupe key and sample (JSON);
    near-duplicate pairs of samples as (where, where, similarity)."""

    samples: list[dict] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    near: list[tuple[str, str, float]] = field(default_factory=list)
    has_chat: bool = False
    has_tools: bool = False
    report: DataReport = field(default_factory=DataReport)


def _mapped(stream, mapping: dict[str, str]):
    """The source's records with its `fields:` mapping applied; a record missing a mapped key becomes a Drop."""
    for item in stream:
        if isinstance(item, Record) and mapping:
            try:
                item = Record(item.where, apply_fields(item.fields, mapping))
            except RowProblem as p:
                item = Drop(p.reason, item.where, p.detail)
        yield item


def source_format(src: SourceSpec) -> str:
    """The format of one source as read_all would take it: declared, or detected from its first DETECT_ROWS rows."""
    head = list(itertools.islice(_mapped(stream_source(src), src.fields), DETECT_ROWS))
    rows = SourceRows(src.path, [r for r in head if isinstance(r, Record)], [d for d in head if isinstance(d, Drop)])
    return detect_format(rows, src.format)


def read_all(data: DataSpec) -> Loaded:
    """Stream every train and eval source, convert records to samples and drop (with file:line) what is broken."""
    out = Loaded(
        report=DataReport(max_dropped_fraction=data.max_dropped_fraction, packing=data.packing, max_seq_len=data.max_seq_len)
    )
    seen: dict[str, str] = {}
    for i, src in enumerate([*data.train, *data.eval]):
        digest = hashlib.sha256()
        stream = _mapped(stream_source(src, digest), src.fields)
        head = list(itertools.islice(stream, DETECT_ROWS))
        fmt = detect_format(
            SourceRows(src.path, [r for r in head if isinstance(r, Record)], [d for d in head if isinstance(d, Drop)]), src.format
        )
        refuse_untrainable(src.path, fmt)
        summary = SourceSummary(path=src.path, format=fmt, detected=src.format == "auto", rows_read=0)
        (out.report.sources if i < len(data.train) else out.report.eval_sources).append(summary)
        for item in itertools.chain(head, stream):
            summary.rows_read += 1
            if isinstance(item, Drop):
                out.report.add_drop(item)
                continue
            try:
                sample = to_sample(item.fields, fmt, data.system_prompt, src.roles)
            except RowProblem as p:
                out.report.add_drop(Drop(p.reason, item.where, p.detail))
                continue
            text = json.dumps(sample, sort_keys=True, ensure_ascii=False)
            key = hashlib.sha1(text.encode()).hexdigest()
            # Duplicates count within train and within eval; eval rows equal to train rows are contamination instead.
            scoped = f"{'t' if i < len(data.train) else 'e'}:{key}"
            if data.dedupe and scoped in seen:
                out.report.add_drop(Drop("duplicate", item.where, f"same as {seen[scoped]}"))
                continue
            seen.setdefault(scoped, item.where)
            out.has_chat |= sample["messages"] is not None
            out.has_tools |= bool(sample["tools"]) or any("tool_calls" in m for m in sample["messages"] or [])
            out.samples.append({"src": i, "where": item.where, "key": key, "sample": text})
        out.digests.append(f"{src.path}|{fmt}|{src.weight}|{src.split}|{src.fields}|{src.roles}|{digest.hexdigest()}")
    out.report.rows_read = sum(s.rows_read for s in [*out.report.sources, *out.report.eval_sources])
    if data.near_duplicates is not None and out.samples:
        _near_duplicates(out, data)
    return out


def _near_duplicates(loaded: Loaded, data: DataSpec) -> None:
    """Find near-duplicate pairs; within train, report them or (policy drop) drop the later row of each pair."""
    texts = [sample_text(json.loads(s["sample"])) for s in loaded.samples]
    pairs = near_pairs(texts, data.near_duplicates.threshold)
    n_train = len(data.train)
    dropped = set()
    for a, b, similarity in pairs:
        sa, sb = loaded.samples[a], loaded.samples[b]
        if sa["src"] < n_train and sb["src"] < n_train:
            loaded.report.near_duplicates.add(f"{sa['where']} <-> {sb['where']} (similarity {similarity:.2f})")
            if data.near_duplicates.train == "drop" and a not in dropped:
                dropped.add(b)
        loaded.near.append((sa["where"], sb["where"], similarity))
    for b in sorted(dropped):
        s = loaded.samples[b]
        other = next(loaded.samples[a]["where"] for a, bb, _ in pairs if bb == b and a not in dropped)
        loaded.report.add_drop(Drop("near duplicate", s["where"], f"near {other}"))
    loaded.samples = [s for k, s in enumerate(loaded.samples) if k not in dropped]


def tokenize(loaded: Loaded, data: DataSpec, tokenizer) -> Dataset:
    """Render and tokenize every kept sample in parallel (Ray Data when Ray is running and there are ROWS_FOR_RAY
    samples or more, else datasets.map with num_proc) and apply the length policy; text documents longer than
    max_seq_len become windows."""
    report = loaded.report
    if not loaded.samples:
        raise UserError(
            f"no usable rows in the data: {report.rows_read} read, all dropped. Fix: run `rayfit data check` "
            "and repair the reasons it lists."
        )
    if tokenizer.chat_template is None and loaded.has_chat:
        raise UserError(
            "the tokenizer of model.base has no chat template, but the data has conversations. Fix: use a "
            "model with a chat template (e.g. an -Instruct model), or set format: text on the sources."
        )
    if loaded.has_tools:
        check_tool_support(tokenizer)
    kwargs = {
        "tokenizer": tokenizer,
        "specials": sorted(special_ids(tokenizer)),
        "max_seq_len": data.max_seq_len,
        "overlap": data.window_overlap,
        "min_tokens": data.min_tokens,
    }
    if len(loaded.samples) >= ROWS_FOR_RAY and _ray_running():
        from cluster.data.ray_tokenize import tokenize_on_ray

        ds = tokenize_on_ray(loaded.samples, kwargs, data.num_proc)
    else:
        ds = Dataset.from_list(loaded.samples)
        procs = max(1, min(data.num_proc or os.cpu_count() or 1, len(ds) // ROWS_PER_PROC))
        ds = ds.map(
            tokenize_batch,
            batched=True,
            batch_size=64,
            num_proc=procs if procs > 1 else None,
            fn_kwargs=kwargs,
            remove_columns=ds.column_names,
            desc="tokenizing",
        )
    return apply_length_policy(ds, data, report)


def _ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def apply_length_policy(ds: Dataset, data: DataSpec, report: DataReport) -> Dataset:
    """Drop rows the template refused, drop or truncate over-long samples, drop too-short ones; count windows."""
    keep, truncated = [], 0
    cols = columns(ds, "length", "trained", "where", "error", "window")
    rendered = [n for n, error, w in zip(cols[0], cols[3], cols[4], strict=True) if error is None and w <= 0]
    if rendered:  # before the length policy, so they show what max_seq_len would keep
        arr = np.array(rendered)
        report.token_lengths = {
            "min": float(arr.min()),
            **{f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 95, 99)},
            "max": float(arr.max()),
            "mean": round(float(arr.mean()), 1),
        }
    report.documents_split = sum(w == 0 for w in cols[4])
    report.windows = sum(w >= 0 for w in cols[4])
    for i, (n, trained, where, error, w) in enumerate(zip(*cols, strict=True)):
        if error is not None:
            report.add_drop(Drop("template error", where, error))
            continue
        if n > data.max_seq_len:
            if data.too_long == "drop":
                report.add_drop(Drop("too long", where, f"{n} tokens > data.max_seq_len {data.max_seq_len}"))
                continue
            trained = sum(label != IGNORE for label in ds[i]["labels"][: data.max_seq_len])
        if trained < data.min_tokens and w <= 0:  # a later window is part of a document trained well past min_tokens
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
    return {
        "input_ids": ids,
        "labels": labels,
        "length": [len(x) for x in ids],
        "trained": [sum(v != IGNORE for v in x) for x in labels],
    }


def check_threshold(report: DataReport) -> None:
    """Raise DataQualityError when more rows were dropped than the spec allows."""
    if report.dropped_fraction > report.max_dropped_fraction:
        raise DataQualityError(report)
