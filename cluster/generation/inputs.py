"""The input of a batch generation: every row of a source, read like training data, as a chat prompt to answer.

Rows keep their position (`index`, counting every row read, readable or not) so output blocks are keyed by it and a
rerun skips what is written. A row that cannot become a prompt is not dropped silently: it becomes a failed output
row with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cluster.data.drops import Drop, RowProblem
from cluster.data.formats import DETECT_ROWS, detect_format, to_sample
from cluster.data.mapping import apply_fields
from cluster.data.sources import Record, SourceRows, stream_source
from cluster.spec.data import SourceSpec


@dataclass
class Prompt:
    """One input row: its position, `file:line`, the conversation to answer, the reference answer if it had one, and
    its own fields (JSON); `problem` is set instead of `messages` when the row cannot be prompted."""

    index: int
    where: str
    messages: list[dict] | None
    reference: str | None
    fields_json: str
    problem: str | None = None
    untold: list[dict] | None = None  # the conversation without `system_prompt` (a distilled training record's)


def read_prompts(source: SourceSpec, system_prompt: str | None) -> list[Prompt]:
    """Every row of `source` in file order (UserError when the whole source is unreadable or its shape unknown)."""
    items = list(stream_source(source))
    records = [i for i in items if isinstance(i, Record)]
    fmt = detect_format(SourceRows(source.path, records=records[:DETECT_ROWS]), source.format)
    return [_prompt(i, item, fmt, source, system_prompt) for i, item in enumerate(items)]


def _prompt(index: int, item: Record | Drop, fmt: str, source: SourceSpec, system_prompt: str | None) -> Prompt:
    if isinstance(item, Drop):
        return Prompt(index, item.where, None, None, "{}", f"{item.reason}: {item.detail}".rstrip(": "))
    fields_json = json.dumps(item.fields, ensure_ascii=False, default=str)
    fields = apply_fields(item.fields, source.fields)
    try:
        messages, reference = conversation(fields, fmt, source.roles, system_prompt)
    except RowProblem as p:
        return Prompt(index, item.where, None, None, fields_json, f"{p.reason}: {p.detail}".rstrip(": "))
    untold = conversation(fields, fmt, source.roles, None)[0] if system_prompt else messages
    return Prompt(index, item.where, messages, reference, fields_json, untold=untold)


def conversation(fields: dict, fmt: str, roles: dict[str, str], system_prompt: str | None) -> tuple[list[dict], str | None]:
    """(the messages to answer, the reference answer or None) for one record of shape `fmt`."""
    if fmt in ("prompt_only", "preference", "unpaired_preference", "text"):
        prompt = fields.get("text" if fmt == "text" else "prompt")
        if isinstance(prompt, str):
            fields = {"prompt": prompt, "completion": "-"}
        elif isinstance(prompt, list):
            fields = {"messages": [*prompt, {"role": "assistant", "content": "-"}]}
        else:
            raise RowProblem("missing field", "no 'prompt' to answer")
        fmt = "prompt_completion" if "prompt" in fields else "messages"
        messages, _ = conversation(fields, fmt, roles, system_prompt)
        return messages, None
    sample = to_sample(fields, fmt, system_prompt, roles)
    if sample["messages"] is None:  # string prompt/completion
        messages = [{"role": "user", "content": sample["prompt"]}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages, sample["completion"]
    messages = [{k: v for k, v in m.items() if v is not None} for m in sample["messages"]]
    if messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None
