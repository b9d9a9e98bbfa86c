"""A generation's answers as training records (`as_training_data`): the distillation step of the data pipeline.

Each answer that ended by itself becomes `{"messages": [the conversation..., {"role": "assistant", "content": the
answer}], "source": "file:line"}`, a record the data pipeline reads as the `messages` shape, so the usual data report
(dedup, near-duplicates, contamination against eval) runs on it. The teacher's system prompt is dropped unless
`keep_system_prompt`: the student learns to answer as the prompted teacher does without being told. An answer that
failed, was cut off at max_tokens or is empty is not a training record: it goes to OUTPUT.rejected.jsonl with why.
"""

from __future__ import annotations

from cluster.generation.inputs import Prompt
from cluster.generation.settings import GenerateSettings


def training_records(rows: list[dict], prompts: dict[int, Prompt], settings: GenerateSettings) -> tuple[list, list]:
    """(training records, rejected answer rows with `rejected_because`), both in input order."""
    records, rejected = [], []
    for row in rows:
        why = _rejection(row)
        if why:
            rejected.append(row | {"rejected_because": why})
            continue
        prompt = prompts[row["index"]]
        conversation = prompt.messages if settings.keep_system_prompt else prompt.untold
        records.append(
            {"messages": [*conversation, {"role": "assistant", "content": row["output"].strip()}], "source": row["where"]}
        )
    return records, rejected


def _rejection(row: dict) -> str | None:
    if row["error"]:
        return row["error"]
    if row["finish_reason"] == "length":
        return f"cut off at max_tokens ({row['output_tokens']} tokens)"
    if not (row["output"] or "").strip():
        return "empty answer"
    return None
