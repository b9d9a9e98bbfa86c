"""Preference rows (DPO pairs, KTO feedback): validated one by one, dropped with `file:line`, normalised for TRL.

Rows keep TRL's own dataset shapes (explicit or implicit prompt, strings or message lists); each is normalised with
TRL's `maybe_convert_to_chatml` and `maybe_extract_prompt` to the conversational {prompt, chosen, rejected} or
{prompt, completion, label} that DPOTrainer/KTOTrainer tokenize themselves. Common column names of public preference
sets (question/instruction, chosen_response, ...) are accepted as aliases, and OpenAI's DPO fine-tuning rows
(`{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`) as pairs.
"""

from __future__ import annotations

from typing import Any

from cluster.data.drops import Drop

# Column aliases seen in public preference sets (UltraFeedback, orca_dpo_pairs, HH-RLHF, argilla), first match wins.
PROMPT_KEYS = ("prompt", "question", "instruction", "input", "query")
CHOSEN_KEYS = ("chosen", "chosen_response", "response_chosen", "chosen_text", "preferred_output")
REJECTED_KEYS = ("rejected", "rejected_response", "response_rejected", "rejected_text", "non_preferred_output")
COMPLETION_KEYS = ("completion", "response", "output", "answer")
LABEL_KEYS = ("label", "thumbs_up", "desirable")
LABEL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "up": True,
    "good": True,
    "false": False,
    "0": False,
    "no": False,
    "down": False,
    "bad": False,
}
PREFERENCE_REASONS = ("missing field", "wrong type", "missing prompt", "empty", "identical chosen/rejected")


class BadRow(Exception):
    """One preference row that cannot be used: a reason (one of PREFERENCE_REASONS) and what exactly is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def is_preference(fields: dict) -> bool:
    """Whether a record is a preference pair (chosen and rejected under any known name)."""
    return _first(fields, CHOSEN_KEYS) is not None or _first(fields, REJECTED_KEYS) is not None


def normalise_pair(fields: dict, system_prompt: str | None = None) -> dict:
    """A conversational {prompt, chosen, rejected} from one record; raises BadRow with the reason."""
    from trl.data_utils import maybe_extract_prompt

    fields = _openai_pair(fields)
    chosen_key, rejected_key = _first(fields, CHOSEN_KEYS), _first(fields, REJECTED_KEYS)
    if chosen_key is None or rejected_key is None:
        missing = "chosen" if chosen_key is None else "rejected"
        raise BadRow("missing field", f"no '{missing}' field (keys: {sorted(fields)})")
    row = {
        "chosen": _turns(fields[chosen_key], chosen_key, "assistant"),
        "rejected": _turns(fields[rejected_key], rejected_key, "assistant"),
    }
    for key, name in ((chosen_key, "chosen"), (rejected_key, "rejected")):
        if not row[name]:
            raise BadRow("empty", f"'{key}' is empty")
    prompt_key = _first(fields, PROMPT_KEYS)
    # A prompt column beside full conversations repeats their opening turns: take the prompt from the turns instead.
    if prompt_key is not None and isinstance(fields[prompt_key], list) == isinstance(fields[chosen_key], list):
        row["prompt"] = _turns(fields[prompt_key], prompt_key, "user")
        if not row["prompt"]:
            raise BadRow("missing prompt", f"'{prompt_key}' is empty")
    row = maybe_extract_prompt(row)  # implicit prompt: the turns chosen and rejected share
    if not row["prompt"]:
        raise BadRow("missing prompt", "no prompt field, and chosen and rejected share no opening turns")
    for key in ("chosen", "rejected"):
        if not row[key] or not any(m["content"].strip() for m in row[key]):
            raise BadRow("empty", f"'{key}' has no answer after the prompt")
    if row["chosen"] == row["rejected"]:
        raise BadRow("identical chosen/rejected", "chosen and rejected are the same answer, which teaches nothing")
    return {**row, "prompt": _with_system(row["prompt"], fields, system_prompt)}


def _openai_pair(fields: dict) -> dict:
    """OpenAI's DPO row as {prompt, chosen, rejected} (its prompt is `input.messages`); any other record unchanged."""
    if "preferred_output" not in fields and "non_preferred_output" not in fields:
        return fields
    for key in ("preferred_output", "non_preferred_output"):
        if fields.get(key) is None:
            raise BadRow("missing field", f"no '{key}' field (keys: {sorted(fields)})")
    given = fields.get("input")
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        raise BadRow("missing prompt", "OpenAI's DPO format needs 'input' as {\"messages\": [...]}")
    if given.get("tools"):  # TRL's DPO rows carry no tool definitions: training on the row without them would mislead
        raise BadRow("wrong type", "'input.tools': tool definitions in preference rows are not supported; remove them")
    return {"prompt": given["messages"], "chosen": fields["preferred_output"], "rejected": fields["non_preferred_output"]}


def normalise_feedback(fields: dict, system_prompt: str | None = None) -> list[dict]:
    """KTO rows {prompt, completion, label} from one record; a pair gives two rows (chosen up, rejected down)."""
    if is_preference(fields):
        pair = normalise_pair(fields, system_prompt)
        return [
            {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False},
        ]
    prompt_key, completion_key, label_key = (_first(fields, k) for k in (PROMPT_KEYS, COMPLETION_KEYS, LABEL_KEYS))
    for name, key in (("prompt", prompt_key), ("completion", completion_key), ("label", label_key)):
        if key is None:
            raise BadRow("missing field", f"no '{name}' field (keys: {sorted(fields)})")
    prompt = _turns(fields[prompt_key], prompt_key, "user")
    if not prompt:
        raise BadRow("missing prompt", f"'{prompt_key}' is empty")
    completion = _turns(fields[completion_key], completion_key, "assistant")
    if not completion:
        raise BadRow("empty", f"'{completion_key}' is empty")
    return [
        {
            "prompt": _with_system(prompt, fields, system_prompt),
            "completion": completion,
            "label": _label(fields[label_key], label_key),
        }
    ]


def bad_row_drop(problem: BadRow, where: str) -> Drop:
    """The report entry of a bad row."""
    return Drop(problem.reason, where, problem.detail)


def _first(fields: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in fields and fields[k] is not None), None)


def _turns(value: Any, key: str, role: str) -> list[dict]:
    """A string becomes one message of `role`; a message list (role/content or ShareGPT from/value) is checked."""
    from trl.data_utils import maybe_convert_to_chatml

    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else []
    if not isinstance(value, list):
        raise BadRow("wrong type", f"'{key}' is {type(value).__name__}; expected a string or a list of messages")
    messages = maybe_convert_to_chatml({"messages": [dict(m) if isinstance(m, dict) else m for m in value]})["messages"]
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise BadRow("wrong type", f"'{key}'[{i}] is not a {{role, content}} message with string content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _with_system(prompt: list[dict], fields: dict, system_prompt: str | None) -> list[dict]:
    system = fields.get("system") if isinstance(fields.get("system"), str) and fields["system"].strip() else system_prompt
    if system and prompt[0]["role"] != "system":
        return [{"role": "system", "content": system}, *prompt]
    return prompt


def _label(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    raise BadRow("wrong type", f"'{key}' is {value!r}; expected true/false (thumbs up/down)")
