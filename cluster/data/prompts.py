"""GRPO's prompt rows with their reference fields: three shapes in, one {prompt, item, where} row out.

- OpenAI's reinforcement fine-tuning rows: `messages` (the prompt) plus any extra fields;
- OpenAI evals rows: `input` (text or messages) plus `ideal`;
- TRL's prompt-only rows: `prompt` (text or messages) plus any columns.

The whole record is the grader's `item`, so `{{item.FIELD}}` reads any of its fields. Before any worker starts,
every field a grader reads must exist in every row (named by file:line), and each grader is tried on a few rows so
a python grader that raises or hangs is named then, not mid-run.
"""

from __future__ import annotations

import itertools
import json

from cluster import storage
from cluster.data.cache import PreparedData, cached, content_hash, save
from cluster.data.conversations import normalize, text_of
from cluster.data.drops import Drop, RowProblem
from cluster.data.report import DataReport, SourceSummary
from cluster.data.sources import Record, read_source, stream_source
from cluster.errors import UserError
from cluster.spec import DataSpec, JobSpec
from cluster.spec.data import SourceSpec

PROMPT_KEYS = {"rft": "messages", "openai_evals": "input", "trl": "prompt"}
TRIED_ROWS = 3  # rows each grader is tried on before training: enough to catch a grader that always fails
PROMPTS_VERSION = "prompts-1"  # part of the cache key: bump when the saved rows change for the same input


def shape_of(fields: dict) -> str:
    """Which prompt shape a record has; RowProblem when none."""
    for shape, key in PROMPT_KEYS.items():
        if key in fields:
            return shape
    raise RowProblem("missing field", f"no prompt: expected 'messages', 'input' or 'prompt' (keys: {sorted(fields)})")


def prompt_of(fields: dict, system_prompt: str | None = None) -> list[dict]:
    """The prompt as chat messages ending with a user turn (an RFT row's trailing assistant turns are not prompt)."""
    raw = fields[PROMPT_KEYS[shape_of(fields)]]
    if isinstance(raw, str):
        if not raw.strip():
            raise RowProblem("empty content", "the prompt is empty")
        messages = [{"role": "user", "content": text_of(raw, "the prompt")}]
    else:
        messages, _ = normalize(raw, "the prompt", {})
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
    if not messages or messages[-1]["role"] != "user":
        raise RowProblem("wrong role order", "the prompt does not end with a user message")
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def holds_prompts(src: SourceSpec) -> bool:
    """Whether a `messages` source holds RFT prompts rather than conversations to imitate: most of its first
    DETECT_ROWS records end with a user turn (the detection's sample; a stray answered row is still a prompt)."""
    from cluster.data.formats import DETECT_ROWS

    asks = answered = 0
    for rec in itertools.islice((r for r in stream_source(src) if isinstance(r, Record)), DETECT_ROWS):
        try:
            messages, _ = normalize(rec.fields.get("messages"), "messages", src.roles or {})
        except RowProblem:
            continue
        last = messages[-1]["role"] if messages else None
        asks, answered = asks + (last == "user"), answered + (last == "assistant")
    return asks > answered


def read_prompts(data: DataSpec, digests: list[str] | None = None) -> tuple[list[dict], DataReport]:
    """Every train and eval record of `data` as {src, where, prompt, item}, and the report of what was read and
    dropped; each source's content digest is appended to `digests` when given (the cache key)."""
    report = DataReport(max_dropped_fraction=data.max_dropped_fraction, max_seq_len=data.max_seq_len)
    rows = []
    for i, src in enumerate([*data.train, *data.eval]):
        got = read_source(src)
        if digests is not None:
            digests.append(f"{src.path}|{src.weight}|{src.split}|{got.digest}")
        summary = SourceSummary(path=src.path, format="prompt_only", detected=False, rows_read=got.rows_read)
        (report.sources if i < len(data.train) else report.eval_sources).append(summary)
        for drop in got.drops:
            report.add_drop(drop)
        for rec in got.records:
            try:
                prompt = prompt_of(rec.fields, data.system_prompt)
            except RowProblem as p:
                report.add_drop(Drop(p.reason, rec.where, p.detail))
                continue
            summary.rows_kept += 1
            rows.append({"src": i, "where": rec.where, "prompt": prompt, "item": rec.fields})
    report.rows_read = sum(s.rows_read for s in [*report.sources, *report.eval_sources])
    report.rows_dropped = sum(e.count for e in report.dropped.values())
    report.rows_kept = report.rows_read - report.rows_dropped
    report.dropped_fraction = report.rows_dropped / report.rows_read if report.rows_read else 0.0
    return rows, report


def check_graders(spec: JobSpec, rows: list[dict]) -> None:
    """Every field each grader reads is in every row, and each grader scores a few rows; else one UserError."""
    from cluster.graders.grading import Grading, missing_fields

    grpo = spec.train.grpo
    problems = missing_fields(grpo.graders, [(r["where"], r["item"]) for r in rows])
    if not problems:
        with Grading(grpo.graders, grpo.weights, max_failures=len(grpo.graders) * TRIED_ROWS) as grading:
            for row in rows[:TRIED_ROWS]:
                grading.score("", row["item"], row["where"])  # an empty answer: every grader must score any answer
            problems = grading.failures
    if problems:
        raise UserError(
            "the graders cannot score the data:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nFix: add the missing fields to the rows or change the graders' templates; a grader must return a "
            "score for any answer, the empty one included (try it with `rayfit graders run SPEC --file ...`)."
        )


def measure(rows: list[dict], spec: JobSpec, tokenizer, report: DataReport) -> list[dict]:
    """Each prompt's tokens as the chat template renders it for generation; a prompt over data.max_seq_len is
    dropped (GRPO never truncates a prompt: the answer would be to a question the grader does not see)."""
    if tokenizer.chat_template is None:
        raise UserError(
            "the tokenizer of model.base has no chat template, but GRPO prompts are conversations. "
            "Fix: use a model with a chat template (e.g. an -Instruct model) or set model.chat_template."
        )
    kept = []
    for row in rows:
        text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n > spec.data.max_seq_len:
            report.add_drop(Drop("too long", row["where"], f"prompt of {n} tokens > data.max_seq_len {spec.data.max_seq_len}"))
            continue
        kept.append({**row, "tokens": n})
    return kept


def checked(spec: JobSpec, tokenizer, digests: list[str] | None = None) -> tuple[list[dict], list[dict], DataReport]:
    """(train rows, held-out rows, report) after every check; UserError or DataQualityError otherwise."""
    from cluster.data.mixing import split_rows
    from cluster.data.pipeline import check_threshold

    rows, report = read_prompts(spec.data, digests)
    rows = measure(rows, spec, tokenizer, report)
    if not rows:
        why = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in report.dropped.items())
        raise UserError(
            f"no prompt rows ({report.rows_read} read; dropped {why or 'none'}). "
            "Fix: run `rayfit data check SPEC` and repair the data."
        )
    report.rows_dropped = sum(e.count for e in report.dropped.values())
    report.rows_kept = report.rows_read - report.rows_dropped
    report.dropped_fraction = report.rows_dropped / report.rows_read if report.rows_read else 0.0
    check_threshold(report)
    check_graders(spec, rows)
    train, held = split_rows(rows, spec.data, report, "prompt rows")
    report.train_samples, report.eval_samples, report.train_rows = len(train), len(held), len(train)
    g = spec.train.grpo  # each prompt is trained num_generations times, with answers of up to max_completion_length
    report.train_tokens = sum(g.num_generations * (r["tokens"] + g.max_completion_length) for r in train)
    return train, held, report


def check_prompts(spec: JobSpec, tokenizer) -> DataReport:
    """Every GRPO data check without saving anything (`rayfit data check`); raises UserError or DataQualityError."""
    digests: list[str] = []
    report = checked(spec, tokenizer, digests)[2]
    report.hash = content_hash(spec, tokenizer, [PROMPTS_VERSION, *digests])
    return report


def prepare_prompts(spec: JobSpec, tokenizer, cache_dir: str) -> PreparedData:
    """Checked prompt rows saved under `cache_dir/<content-hash>/{train,eval}` as TRL's prompt-only rows:
    `prompt` (messages), `item_json` (the whole record, what graders read as `item`) and `where` (file:line)."""
    from datasets import Dataset

    digests: list[str] = []
    train, held, report = checked(spec, tokenizer, digests)
    key = content_hash(spec, tokenizer, [PROMPTS_VERSION, *digests])
    target = storage.join(storage.normalize(cache_dir), key)
    found = cached(target)
    if found is not None:
        return found
    report.hash = key

    def dataset(rows: list[dict]):
        return Dataset.from_list(
            [{"prompt": r["prompt"], "item_json": json.dumps(r["item"], sort_keys=True), "where": r["where"]} for r in rows]
        )

    save(target, dataset(train), dataset(held) if held else None, report)
    return PreparedData(storage.join(target, "train"), storage.join(target, "eval") if held else None, report)
