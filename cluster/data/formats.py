"""Record shapes: detecting them from their keys and turning a record into a sample to render.

The shapes are TRL's dataset types (language modeling `text`, prompt-only, prompt/completion as strings or as
message lists, preference pairs with an explicit or implicit prompt, unpaired preference for KTO), chat lists
(`messages`, `conversations`; role/content or from/value; OpenAI's fine-tuning format with `tools`, `tool_calls`,
`tool` results and `weight: 0`), alpaca, and OpenAI evals samples (`input` + `ideal`). OpenAI's DPO rows
(`input.messages`, `preferred_output`, `non_preferred_output`) are preference pairs.

A sample is a dict with every key present: `messages` + `train` (per message: is it trained) + `tools` for
conversations, `text` for language modeling, `prompt` + `completion` for string prompt/completion.
"""

from __future__ import annotations

from collections import Counter

from cluster.data.conversations import check_order, normalize, text_of, tools_of
from cluster.data.drops import RowProblem
from cluster.data.sources import SourceRows
from cluster.errors import UserError

TRAINABLE = ("alpaca", "messages", "sharegpt", "text", "prompt_completion", "openai_evals")
PAIRED = ("preference", "unpaired_preference", "prompt_only")  # recognised; trained by other objectives
FORMATS = TRAINABLE + PAIRED
DETECT_ROWS = 1000  # rows looked at to detect a format; enough to see every shape a file mixes
SHAPES = {
    "alpaca": "instruction, output (optional input, system)",
    "messages": "messages: a list of {role, content} (or {from, value}); OpenAI tools/tool_calls/weight",
    "sharegpt": "conversations: a list of {from, value} (or {role, content})",
    "text": "text (language modeling)",
    "prompt_completion": "prompt, completion (both text, or both lists of messages)",
    "openai_evals": "input (messages), ideal (the answer)",
    "preference": "chosen, rejected, optional prompt (text or messages); or OpenAI's DPO rows: input.messages, "
    "preferred_output, non_preferred_output",
    "unpaired_preference": "prompt, completion, label (true/false; KTO)",
    "prompt_only": "prompt only (for online methods such as GRPO)",
}


def _signatures(fields: dict) -> set[str]:
    """The formats whose identifying keys this record has."""
    found = set()
    has = fields.__contains__
    if isinstance(fields.get("messages"), list):
        found.add("messages")
    if isinstance(fields.get("conversations"), list):
        found.add("sharegpt")
    if has("instruction") and has("output"):
        found.add("alpaca")
    if isinstance(fields.get("text"), str):
        found.add("text")
    if has("input") and has("ideal"):
        found.add("openai_evals")
    if (has("chosen") and has("rejected")) or (has("preferred_output") and has("non_preferred_output")):
        found.add("preference")  # TRL's pairs, or OpenAI's DPO rows (input.messages, preferred/non_preferred_output)
    elif has("prompt") and has("completion") and isinstance(fields.get("label"), bool):
        found.add("unpaired_preference")
    elif has("prompt") and has("completion"):
        found.add("prompt_completion")
    elif has("prompt"):
        found.add("prompt_only")
    return found


def detect_format(rows: SourceRows, declared: str) -> str:
    """The source's format: `declared` unless it is auto; an unknown or ambiguous shape is a UserError naming the keys.

    Detection looks at the first DETECT_ROWS records of `rows` (its drops are only named when nothing is readable).
    """
    if declared != "auto":
        return declared
    path = rows.path
    sample = [r.fields for r in rows.records[:DETECT_ROWS]]
    counts = Counter(f for r in sample for f in _signatures(r))
    keys = sorted({k for r in sample for k in r})
    if not counts:
        if not sample:
            drops = rows.drops
            raise UserError(
                f"data source {path!r} has no readable records ({len(drops)} unreadable rows, "
                f"first: {drops[0] if drops else 'none'}). Fix: check the file."
            )
        shapes = "; ".join(f"{name}: {keys_}" for name, keys_ in SHAPES.items())
        raise UserError(
            f"data source {path!r}: unknown record shape; keys seen: {keys}. Fix: map your keys with "
            f"fields: on the source (e.g. fields: {{prompt: question, completion: answer}}), or use one of "
            f"these shapes: {shapes}."
        )
    if len(counts) > 1:
        seen = ", ".join(f"{f} ({n} rows)" for f, n in counts.most_common())
        raise UserError(
            f"data source {path!r}: ambiguous record shape, rows look like {seen}; keys seen: {keys}. "
            f"Fix: set format: to one of {', '.join(FORMATS)} on this source."
        )
    return next(iter(counts))


def refuse_untrainable(path: str, fmt: str) -> None:
    """A UserError for shapes that supervised fine-tuning cannot train, naming the shape and the fix."""
    if fmt in ("preference", "unpaired_preference"):
        what = (
            "preference pairs (chosen/rejected)"
            if fmt == "preference"
            else "unpaired preference rows (prompt, completion, label) for KTO"
        )
        raise UserError(
            f"data source {path!r} holds {what}: shape {fmt}. Supervised fine-tuning trains on "
            "conversations or completions, not on pairs. Fix: set train.objective: dpo to train on the "
            "pairs, or give SFT data (e.g. the chosen answers as prompt/completion)."
        )
    if fmt == "prompt_only":
        raise UserError(
            f"data source {path!r} holds prompts without answers (shape prompt_only, TRL's type for online "
            "methods such as GRPO); supervised fine-tuning needs the answer to train on. Fix: add a "
            "completion to each row, or map the answer's key with fields: {completion: <key>}."
        )


def to_sample(fields: dict, fmt: str, system_prompt: str | None, roles: dict[str, str] | None = None) -> dict:
    """A record as a sample (see the module docstring), validated; raises RowProblem naming what is wrong."""
    roles = roles or {}
    if fmt == "text":
        text = fields.get("text")
        if not isinstance(text, str):
            raise RowProblem("missing field", "no 'text' string")
        if not text.strip():
            raise RowProblem("empty content", "'text' is empty")
        return _sample(text=text)
    if fmt == "prompt_completion" and isinstance(fields.get("prompt"), str) and isinstance(fields.get("completion"), str):
        prompt, completion = fields["prompt"], fields["completion"]
        if not completion.strip():
            raise RowProblem("empty content", "'completion' is empty")
        return _sample(prompt=prompt, completion=completion)
    if fmt not in TRAINABLE:
        raise RowProblem("missing field", f"shape {fmt} is not trained by supervised fine-tuning")
    messages, trained = {
        "alpaca": _alpaca,
        "messages": _chat,
        "sharegpt": _chat,
        "prompt_completion": _prompt_completion,
        "openai_evals": _evals,
    }[fmt](fields, fmt, roles)
    tools = tools_of(fields.get("tools"))
    keep = [i for i, m in enumerate(messages) if not (m["role"] == "system" and not m["content"].strip())]
    messages, trained = [messages[i] for i in keep], [trained[i] for i in keep]
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages, trained = [{"role": "system", "content": system_prompt}, *messages], [False, *trained]
    check_order(messages, trained)
    return _sample(messages=messages, train=trained, tools=tools)


def _sample(**given) -> dict:
    return {"messages": None, "train": None, "tools": None, "text": None, "prompt": None, "completion": None, **given}


def _system(fields: dict) -> list[dict]:
    system = fields.get("system")
    return [{"role": "system", "content": text_of(system, "'system'")}] if system else []


def _alpaca(fields: dict, fmt: str, roles: dict) -> tuple[list[dict], list[bool]]:
    for key in ("instruction", "output"):
        if key not in fields or fields[key] is None:
            raise RowProblem("missing field", f"no '{key}' (alpaca needs instruction and output)")
    instruction, output = text_of(fields["instruction"], "'instruction'"), text_of(fields["output"], "'output'")
    extra = text_of(fields.get("input") or "", "'input'")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [*_system(fields), {"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages, [False] * (len(messages) - 1) + [True]


def _chat(fields: dict, fmt: str, roles: dict) -> tuple[list[dict], list[bool]]:
    key = "messages" if fmt == "messages" else "conversations"
    if key not in fields:
        raise RowProblem("missing field", f"no '{key}'")
    messages, trained = normalize(fields[key], key, roles)
    if fields.get("system") and not any(m["role"] == "system" for m in messages):
        messages, trained = [*_system(fields), *messages], [False, *trained]
    return messages, trained


def _prompt_completion(fields: dict, fmt: str, roles: dict) -> tuple[list[dict], list[bool]]:
    prompt, completion = fields.get("prompt"), fields.get("completion")
    if prompt is None or completion is None:
        raise RowProblem("missing field", f"no '{'prompt' if prompt is None else 'completion'}'")
    if isinstance(prompt, str) or isinstance(completion, str):
        raise RowProblem("missing field", "'prompt' and 'completion' must both be text or both lists of messages")
    p_msgs, _ = normalize(prompt, "prompt", roles)
    c_msgs, c_trained = normalize(completion, "completion", roles)
    return [*_system(fields), *p_msgs, *c_msgs], [False] * (len(_system(fields)) + len(p_msgs)) + c_trained


def _evals(fields: dict, fmt: str, roles: dict) -> tuple[list[dict], list[bool]]:
    given, ideal = fields.get("input"), fields.get("ideal")
    if isinstance(ideal, list):  # several acceptable answers: the first is trained
        ideal = ideal[0] if ideal else None
    answer = text_of(ideal, "'ideal'")
    if isinstance(given, str):
        messages = [{"role": "user", "content": given}]
    else:
        messages, _ = normalize(given, "input", roles)
    return [*messages, {"role": "assistant", "content": answer}], [False] * len(messages) + [True]
