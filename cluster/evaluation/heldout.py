"""The held-out set, taken from the data layer's tokenized eval split so evaluation sees exactly what training held out.

Eval loss runs on the eval rows as they are (packed rows included). Generation samples are cut out of the same rows:
each sample's last assistant turn is the reference, and every token before it (the chat-templated conversation up
to and including the assistant header) is the prompt, so prompts are rendered by the same template as training.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import UserError
from cluster.run_folder import part, run_uri
from cluster.spec import JobSpec

IGNORE = -100


@dataclass(frozen=True)
class Sample:
    """One generation sample: prompt token ids and the reference answer text."""

    prompt_ids: list[int]
    reference: str


def data_cache_dir(spec: JobSpec) -> str:
    """Where the run's tokenized data lives ({storage}/{name}/data), so a finished run's cache is reused."""
    return part(run_uri(spec), "data")


def load_eval_rows(spec: JobSpec, tokenizer, cache_dir: str | None = None):
    """The tokenized eval dataset (input_ids, labels, position_ids when packed) the run held out."""
    from cluster.data import prepare_datasets

    prepared = prepare_datasets(spec, tokenizer, cache_dir or data_cache_dir(spec))
    rows = prepared.eval()
    if rows is None or len(rows) == 0:
        raise UserError(
            "evaluation needs held-out data, but the prepared data has no eval rows. "
            "Fix: set data.eval_split (e.g. 0.05) or add data.eval sources."
        )
    return rows


def split_samples(row: dict) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each sample in a row: packed rows restart position_ids at 0 for every sample."""
    ids, labels = row["input_ids"], row["labels"]
    positions = row.get("position_ids")
    if not positions:
        return [(ids, labels)]
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    return [(ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:], strict=False) if b > a]


def count_samples(rows) -> int:
    """Held-out samples in the eval rows (a packed row holds several): the count a report quotes."""
    return sum(len(split_samples(row)) for row in rows)


def last_answer(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]] | None:
    """(prompt ids, answer ids) for the last trained span of a sample; None when nothing precedes it (plain text)."""
    end = max((i for i, lab in enumerate(labels) if lab != IGNORE), default=None)
    if end is None:
        return None
    start = end
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    return (ids[:start], ids[start : end + 1]) if start > 0 else None


def generation_samples(rows, tokenizer, limit: int | None) -> list[Sample]:
    """Up to `limit` prompts with reference answers (None: every one), in eval-set order."""
    out: list[Sample] = []
    if limit == 0:
        return out
    for row in rows:
        for ids, labels in split_samples(row):
            cut = last_answer(ids, labels)
            if cut is None:
                continue
            out.append(Sample(cut[0], tokenizer.decode(cut[1], skip_special_tokens=True).strip()))
            if len(out) == limit:
                return out
    return out
