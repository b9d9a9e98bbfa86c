"""Preference data for DPO/KTO on the driver: read, validate (file:line), measure, split, save; TRL tokenizes on workers.

The saved rows are TRL's conversational preference (or unpaired) format, so DPOTrainer/KTOTrainer apply the chat
template and tokenize them with their own code. The report has the same drop reasons with `file:line` as SFT data,
plus the chosen-vs-rejected length bias (a DPO model learns "longer wins" when chosen answers are longer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field

from cluster import storage
from cluster.data.cache import PreparedData, cached, content_hash, save
from cluster.data.drops import Drop
from cluster.data.mixing import split_rows
from cluster.data.pipeline import check_threshold
from cluster.data.preference import BadRow, bad_row_drop, normalise_feedback, normalise_pair
from cluster.data.report import DataReport, SourceSummary
from cluster.data.sources import read_source
from cluster.errors import UserError
from cluster.spec import JobSpec
from cluster.spec.data import DataSpec

PREFERENCE_VERSION = "1"


@dataclass(frozen=True)
class Shape:
    """What DPO's pairs and KTO's feedback differ in; each recipe passes its own (cluster/objectives/)."""

    name: str  # the objective, as the report and the cache key name it
    rows: Callable[[dict, str | None], list[dict]]  # a record's TRL rows (fields, system_prompt); raises BadRow
    answers: tuple[str, ...]  # the answer columns whose tokens are measured
    columns: tuple[str, ...]  # the columns saved for TRL
    bias: Callable[[list[dict]], dict[str, float]]  # the length bias of the training rows


def pair_length_bias(rows: list[dict]) -> dict[str, float]:
    """Mean tokens of chosen and rejected answers, and how often the chosen one is longer."""
    chosen, rejected = [r["chosen_tokens"] for r in rows], [r["rejected_tokens"] for r in rows]
    longer = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    return {
        "chosen_mean_tokens": sum(chosen) / len(chosen),
        "rejected_mean_tokens": sum(rejected) / len(rejected),
        "chosen_longer_fraction": longer,
    }


def feedback_length_bias(rows: list[dict]) -> dict[str, float]:
    """Mean tokens of desirable and undesirable completions, and the share of desirable ones."""
    up = [r["completion_tokens"] for r in rows if r["label"]] or [0]
    down = [r["completion_tokens"] for r in rows if not r["label"]] or [0]
    return {
        "desirable_mean_tokens": sum(up) / len(up),
        "undesirable_mean_tokens": sum(down) / len(down),
        "desirable_fraction": sum(r["label"] for r in rows) / len(rows),
    }


PAIRS = Shape(
    "dpo", lambda f, s: [normalise_pair(f, s)], ("chosen", "rejected"), ("prompt", "chosen", "rejected"), pair_length_bias
)
FEEDBACK = Shape("kto", normalise_feedback, ("completion",), ("prompt", "completion", "label"), feedback_length_bias)


class PreferenceReport(DataReport):
    """The data report of a DPO/KTO run: rows kept and dropped by reason, and the chosen-vs-rejected length bias."""

    objective: str = "dpo"
    length_bias: dict[str, float] = Field(
        default_factory=dict,
        description="Mean completion tokens of chosen and "
        "rejected (desirable/undesirable for KTO), and the fraction of pairs whose chosen is longer.",
    )

    def to_table(self) -> str:
        """The report as aligned text for a terminal."""
        lines = [f"Preference data ({self.objective})"]
        for kind, group in (("train", self.sources), ("eval", self.eval_sources)):
            lines += [f"  {kind:5} {s.path}  read={s.rows_read} kept={s.rows_kept} used={s.rows_used}" for s in group]
        lines.append(
            f"Rows: read {self.rows_read}, kept {self.rows_kept}, dropped {self.rows_dropped} "
            f"({self.dropped_fraction:.1%}; limit {self.max_dropped_fraction:.1%})"
        )
        for reason, ex in self.dropped.items():
            lines.append(f"  {reason:26} {ex.count:6}")
            lines += [f"      {e}" for e in ex.examples]
        if self.length_bias:
            lines.append("Length bias: " + "  ".join(f"{k}={v:.2f}" for k, v in self.length_bias.items()))
        lines.append(
            f"Train: {self.train_samples} rows, {self.train_tokens} tokens; eval: {self.eval_samples} rows "
            f"(from {self.eval_from})"
        )
        return "\n".join(lines)


def read_preferences(spec: JobSpec, shape: Shape) -> tuple[list[dict], PreferenceReport, list[str]]:
    """Every train and eval source as TRL rows with `src` and `where`, the report so far, and source digests."""
    return read_preference_sources(spec.data, shape)


def read_preference_sources(data: DataSpec, shape: Shape) -> tuple[list[dict], PreferenceReport, list[str]]:
    """read_preferences for a data section alone (the fine-tuning service checks an uploaded file with it)."""
    objective = shape.name
    report = PreferenceReport(objective=objective, max_dropped_fraction=data.max_dropped_fraction, max_seq_len=data.max_seq_len)
    rows, digests, seen = [], [PREFERENCE_VERSION, objective], {}
    for i, src in enumerate([*data.train, *data.eval]):
        got = read_source(src)
        summary = SourceSummary(path=src.path, format=objective, detected=False, rows_read=got.rows_read)
        (report.sources if i < len(data.train) else report.eval_sources).append(summary)
        digests.append(f"{src.path}|{src.weight}|{src.split}|{got.digest}")
        for drop in got.drops:
            report.add_drop(drop)
        for rec in got.records:
            try:
                made = shape.rows(rec.fields, data.system_prompt)
            except BadRow as p:
                report.add_drop(bad_row_drop(p, rec.where))
                continue
            key = hashlib.sha1(json.dumps([i < len(data.train), made], sort_keys=True).encode()).hexdigest()
            if data.dedupe and key in seen:
                report.add_drop(Drop("duplicate", rec.where, f"same as {seen[key]}"))
                continue
            seen[key] = rec.where
            rows += [{"src": i, "where": rec.where, **r} for r in made]
    report.rows_read = sum(s.rows_read for s in [*report.sources, *report.eval_sources])
    return rows, report, digests


def measure(rows: list[dict], spec: JobSpec, tokenizer, report: PreferenceReport, shape: Shape) -> list[dict]:
    """Token lengths with TRL's chat templating; rows over data.max_seq_len are dropped (too_long: drop)."""
    from trl.data_utils import apply_chat_template

    if tokenizer.chat_template is None:
        raise UserError(
            "the tokenizer of model.base has no chat template, but preference rows are conversations. "
            "Fix: use a model with a chat template (e.g. an -Instruct model) or set model.chat_template."
        )
    answers = shape.answers
    kept = []
    for row in rows:
        text = apply_chat_template({k: row[k] for k in ("prompt", *answers)}, tokenizer)
        n_prompt = len(tokenizer(text["prompt"], add_special_tokens=False)["input_ids"])
        lengths = {k: len(tokenizer(text["prompt"] + text[k], add_special_tokens=False)["input_ids"]) - n_prompt for k in answers}
        total = n_prompt + max(lengths.values())
        if total > spec.data.max_seq_len and spec.data.too_long == "drop":
            report.add_drop(Drop("too long", row["where"], f"{total} tokens > data.max_seq_len {spec.data.max_seq_len}"))
            continue
        kept.append({**row, "tokens": n_prompt + sum(lengths.values()), **{f"{k}_tokens": v for k, v in lengths.items()}})
    return kept


def prepare_preferences(spec: JobSpec, tokenizer, cache_dir: str, shape: Shape) -> PreparedData:
    """Validated, split and saved preference rows under `cache_dir/<content-hash>/{train,eval}`, with their report."""
    from datasets import Dataset

    rows, report, digests = read_preferences(spec, shape)
    key = content_hash(spec, tokenizer, digests)
    target = storage.join(storage.normalize(cache_dir), key)
    found = cached(target)
    if found is not None:
        return PreparedData(found.train_path, found.eval_path, PreferenceReport.model_validate(found.report.model_dump()))
    train, held = _check(rows, spec, tokenizer, report, shape)
    report.hash = key
    keep = [*shape.columns, "where"]
    train_ds = Dataset.from_list([{k: r[k] for k in keep} for r in train])
    eval_ds = Dataset.from_list([{k: r[k] for k in keep} for r in held]) if held else None
    save(target, train_ds, eval_ds, report)
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if held else None, report)


def check_preferences(spec: JobSpec, tokenizer, shape: Shape) -> PreferenceReport:
    """Every preference check without saving anything (`rayfit data check`); raises DataQualityError."""
    rows, report, digests = read_preferences(spec, shape)
    _check(rows, spec, tokenizer, report, shape)
    report.hash = content_hash(spec, tokenizer, digests)
    return report


def _check(rows: list[dict], spec: JobSpec, tokenizer, report: PreferenceReport, shape: Shape) -> tuple[list[dict], list[dict]]:
    """Length policy, split and mix, report counts; raises DataQualityError past data.max_dropped_fraction."""
    rows = measure(rows, spec, tokenizer, report, shape)
    train, held = split_rows(rows, spec.data, report, "preference rows")
    report.length_bias = shape.bias(train) if train else {}
    report.rows_dropped = sum(e.count for e in report.dropped.values())
    report.rows_kept = report.rows_read - report.rows_dropped
    report.dropped_fraction = report.rows_dropped / report.rows_read if report.rows_read else 0.0
    report.train_samples, report.eval_samples = len(train), len(held)
    report.train_tokens = sum(r["tokens"] for r in train)
    report.train_rows = len(train)
    check_threshold(report)
    return train, held
