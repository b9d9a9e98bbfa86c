"""Tokenized samples to the training and eval sets: split eval, mix train by weight, apply the contamination policy,
pack, and fill in the report (counts, warnings, the answer distribution of short-answer data)."""

from __future__ import annotations

import json
import random
from collections import Counter

from datasets import Dataset

from cluster.data.drops import Drop
from cluster.data.mixing import choose, mix_counts, split_eval
from cluster.data.packing import efficiency, pack
from cluster.data.pipeline import COLUMNS, Loaded, columns
from cluster.data.render import show_mask
from cluster.data.report import DataReport
from cluster.errors import UserError
from cluster.spec import DataSpec

FEW_ROWS = 50  # below this many usable rows, few-shot prompting may serve better than fine-tuning
SHORT_ANSWER_WORDS = 3
TOP_ANSWERS = 10


class ContaminationError(UserError):
    """Eval samples equal or near to train samples under `near_duplicates.contamination: fail`."""

    exit_code = 1


def finish(loaded: Loaded, data: DataSpec, ds: Dataset, tokenizer) -> tuple[Dataset, Dataset | None, DataReport]:
    """Split eval, mix train by weight, apply the contamination policy, pack, and fill in the report."""
    report, rng = loaded.report, random.Random(data.seed)
    n_train_src = len(data.train)
    src, keys, wheres = columns(ds, "src", "key", "where")
    per_source = [[i for i, s in enumerate(src) if s == k] for k in range(n_train_src)]
    eval_idx = [i for i, s in enumerate(src) if s >= n_train_src]
    report.eval_from = "sources" if data.eval else ("split" if data.eval_split > 0 else "none")
    for k, group in enumerate(per_source):
        report.sources[k].rows_kept = len({wheres[i] for i in group})
    if not data.eval:
        # Windows of one document stay together, so no document is half in train and half in eval.
        docs = list(dict.fromkeys(wheres[i] for group in per_source for i in group))
        held_docs = set(split_eval(docs, data.eval_split, rng)[1])
        held = [i for group in per_source for i in group if wheres[i] in held_docs]
        for k, group in enumerate(per_source):
            report.sources[k].rows_held_out = len({wheres[i] for i in group if wheres[i] in held_docs})
        per_source = [[i for i in group if wheres[i] not in held_docs] for group in per_source]
        eval_idx = held
    for k, s in enumerate(report.eval_sources):
        s.rows_kept = s.rows_used = len({wheres[i] for i in eval_idx if src[i] == n_train_src + k})
    counts = mix_counts([len(g) for g in per_source], [s.weight for s in data.train])
    train_idx = []
    for k, (group, count) in enumerate(zip(per_source, counts, strict=True)):
        report.sources[k].rows_used = count
        train_idx += choose(group, count, rng)
    train_keys = {keys[i] for i in train_idx}
    for i in eval_idx:
        if keys[i] in train_keys:
            report.contamination.add(wheres[i])
    train_idx = _contamination(loaded, data, wheres, train_idx, eval_idx, keys)
    if not train_idx:
        why = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in report.dropped.items())
        raise UserError(
            f"no training rows left after checks ({report.rows_read} read; dropped {why or 'none'}). "
            "Fix: run `rayfit data check SPEC` and repair the data, or adjust data.max_seq_len/too_long."
        )
    rng.shuffle(train_idx)
    _fill_counts(report, ds, train_idx, eval_idx, data, tokenizer)
    train, evalset = ds.select(train_idx), ds.select(eval_idx) if eval_idx else None
    if data.packing:
        train = pack(train, data.max_seq_len)
        evalset = pack(evalset, data.max_seq_len) if evalset is not None else None
    else:
        train = train.select_columns(COLUMNS)
        evalset = evalset.select_columns(COLUMNS) if evalset is not None else None
    report.train_rows = len(train)
    report.packing_efficiency = (
        efficiency(len(train), report.train_tokens, data.max_seq_len) if data.packing else report.padded_efficiency
    )
    _quality_notes(report, loaded, train_idx, wheres)
    return train, evalset, report


def _contamination(
    loaded: Loaded, data: DataSpec, wheres: list[str], train_idx: list[int], eval_idx: list[int], keys: list[str]
) -> list[int]:
    """Report train/eval pairs that are equal or near; drop the train side or fail when the policy says so."""
    report = loaded.report
    in_train, in_eval = {wheres[i] for i in train_idx}, {wheres[i] for i in eval_idx}
    pairs = []
    for a, b, similarity in loaded.near:
        if a in in_train and b in in_eval:
            pairs.append((a, b, similarity))
        elif b in in_train and a in in_eval:
            pairs.append((b, a, similarity))
    for t, e, similarity in pairs:
        report.contamination_pairs.add(f"train {t} <-> eval {e} (similarity {similarity:.2f})")
    policy = data.near_duplicates.contamination if data.near_duplicates is not None else "warn"
    if policy == "fail" and pairs:
        listed = "; ".join(f"{t} <-> {e}" for t, e, _ in pairs[:20])
        raise ContaminationError(
            f"{len(pairs)} eval samples are equal or near to train samples (train <-> eval): "
            f"{listed}{' ...' if len(pairs) > 20 else ''}. Fix: remove them from one side, or set "
            "data.near_duplicates.contamination: drop (drops the train side) or warn."
        )
    if policy != "drop" or not pairs:
        return train_idx
    leaking = {t: e for t, e, _ in pairs}
    for t, e in leaking.items():
        report.add_drop(Drop("contamination", t, f"near eval {e}"))
    return [i for i in train_idx if wheres[i] not in leaking]


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


def _quality_notes(report: DataReport, loaded: Loaded, train_idx: list[int], wheres: list[str]) -> None:
    """Warn about few usable rows; show the most common answers when the answers are short (label imbalance)."""
    used = {wheres[i] for i in train_idx}
    if len(used) < FEW_ROWS:
        report.warnings.append(
            f"only {len(used)} training samples: with fewer than {FEW_ROWS}, few-shot prompting "
            "may serve better than fine-tuning."
        )
    answers = []
    for s in loaded.samples:
        if s["where"] in used:
            sample = json.loads(s["sample"])
            if sample["messages"] is not None:
                answers.append(sample["messages"][-1]["content"].strip())
            elif sample["completion"] is not None:
                answers.append(sample["completion"].strip())
    short = [a for a in answers if len(a.split()) <= SHORT_ANSWER_WORDS]
    if answers and len(short) >= 0.8 * len(answers):
        counts = Counter(short).most_common(TOP_ANSWERS)
        report.answers = {a: round(n / len(answers), 3) for a, n in counts}
