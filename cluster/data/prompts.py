"""GRPO's prompt rows with their reference fields: three shapes in, one {prompt, item, where} row out.

- OpenAI's reinforcement fine-tuning rows: `messages` (the prompt) plus any extra fields;
- OpenAI evals rows: `input` (text or messages) plus `ideal`;
- TRL's prompt-only rows: `prompt` (text or messages) plus any columns.

The whole record is the grader's `item`, so `{{item.FIELD}}` reads any of its fields. Before any worker starts,
every field a grader reads must exist in every row (named by file:line), and each grader is tried on a few rows so
a python grader that raises or hangs is named then, not mid-run.
"""

from __future__ import annotations

from cluster.data.conversations import normalize, text_of
from cluster.data.drops import Drop, RowProblem
from cluster.data.report import DataReport, SourceSummary
from cluster.data.sources import read_source
from cluster.errors import UserError
from cluster.spec import JobSpec

PROMPT_KEYS = {"rft": "messages", "openai_evals": "input", "trl": "prompt"}
TRIED_ROWS = 3  # rows each grader is tried on before training: enough to catch a grader that always fails


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


def read_prompts(spec: JobSpec) -> tuple[list[dict], DataReport]:
    """Every train and eval record as {src, where, prompt, item}, and the report of what was read and dropped."""
    data = spec.data
    report = DataReport(max_dropped_fraction=data.max_dropped_fraction, max_seq_len=data.max_seq_len)
    rows = []
    for i, src in enumerate([*data.train, *data.eval]):
        got = read_source(src)
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


def check_prompts(spec: JobSpec) -> DataReport:
    """Every GRPO data check without saving anything (`rayfit data check`); raises UserError or DataQualityError."""
    from cluster.data.pipeline import check_threshold

    rows, report = read_prompts(spec)
    if not rows:
        raise UserError(f"no prompt rows ({report.rows_read} read). Fix: run `rayfit data check SPEC` and repair the data.")
    check_threshold(report)
    check_graders(spec, rows)
    report.train_samples = sum(r["src"] < len(spec.data.train) for r in rows)
    report.eval_samples = len(rows) - report.train_samples
    return report
