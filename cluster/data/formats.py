"""Record shapes (alpaca, OpenAI messages, sharegpt, plain text): detecting them and turning a record into a conversation."""

from __future__ import annotations

from collections import Counter

from cluster.data.drops import RowProblem
from cluster.data.sources import SourceRows
from cluster.errors import UserError

FORMATS = ("alpaca", "messages", "sharegpt", "text")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant"}
DETECT_ROWS = 1000  # rows looked at to detect a format; enough to see every shape a file mixes


def _signatures(fields: dict) -> set[str]:
    """The formats whose identifying keys this record has."""
    found = set()
    if isinstance(fields.get("messages"), list):
        found.add("messages")
    if isinstance(fields.get("conversations"), list):
        found.add("sharegpt")
    if "instruction" in fields and "output" in fields:
        found.add("alpaca")
    if isinstance(fields.get("text"), str):
        found.add("text")
    return found


def detect_format(rows: SourceRows, declared: str) -> str:
    """The source's format: `declared` unless it is auto; an unknown or ambiguous shape is a UserError naming the keys."""
    if declared != "auto":
        return declared
    sample = rows.records[:DETECT_ROWS]
    counts = Counter(f for r in sample for f in _signatures(r.fields))
    keys = sorted({k for r in sample for k in r.fields})
    if not counts:
        if not sample:
            raise UserError(f"data source {rows.path!r} has no readable records ({len(rows.drops)} unreadable rows, "
                            f"first: {rows.drops[0] if rows.drops else 'none'}). Fix: check the file.")
        raise UserError(f"data source {rows.path!r}: unknown record shape; keys seen: {keys}. Fix: use alpaca "
                        "(instruction, input, output), messages (role/content list), sharegpt (conversations with "
                        "from/value) or text, or set format: on the source.")
    if len(counts) > 1:
        seen = ", ".join(f"{f} ({n} rows)" for f, n in counts.most_common())
        raise UserError(f"data source {rows.path!r}: ambiguous record shape, rows look like {seen}; keys seen: {keys}. "
                        f"Fix: set format: to one of {', '.join(FORMATS)} on this source.")
    return next(iter(counts))


def to_sample(fields: dict, fmt: str, system_prompt: str | None) -> dict:
    """A record as {"messages": [...]} (validated roles and order) or {"text": ...}; raises RowProblem."""
    if fmt == "text":
        text = fields.get("text")
        if not isinstance(text, str):
            raise RowProblem("missing field", "no 'text' string")
        if not text.strip():
            raise RowProblem("empty content", "'text' is empty")
        return {"messages": None, "text": text}
    messages = {"alpaca": _alpaca, "messages": _openai, "sharegpt": _sharegpt}[fmt](fields)
    messages = [m for m in messages if not (m["role"] == "system" and not m["content"].strip())]
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    _check_order(messages)
    return {"messages": messages, "text": None}


def _text(value, what: str) -> str:
    """A message's content as a string; OpenAI content-part lists keep their text parts."""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        value = "".join(p.get("text", "") for p in value if p.get("type", "text") == "text")
    if value is None:
        raise RowProblem("missing field", f"{what} is missing")
    if not isinstance(value, str):
        raise RowProblem("missing field", f"{what} is a {type(value).__name__}, not text")
    return value


def _alpaca(fields: dict) -> list[dict]:
    for key in ("instruction", "output"):
        if key not in fields or fields[key] is None:
            raise RowProblem("missing field", f"no '{key}' (alpaca needs instruction and output)")
    instruction, output = _text(fields["instruction"], "'instruction'"), _text(fields["output"], "'output'")
    extra = _text(fields.get("input") or "", "'input'")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = _text(fields.get("system") or "", "'system'")
    return ([{"role": "system", "content": system}] if system.strip() else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _openai(fields: dict) -> list[dict]:
    out = []
    for i, m in enumerate(fields.get("messages") or []):
        if not isinstance(m, dict) or "role" not in m:
            raise RowProblem("missing field", f"messages[{i}] has no 'role'")
        if m["role"] not in ("system", "user", "assistant"):
            raise RowProblem("unknown role", f"messages[{i}] role {m['role']!r}; expected system, user or assistant")
        out.append({"role": m["role"], "content": _text(m.get("content"), f"messages[{i}].content")})
    return out


def _sharegpt(fields: dict) -> list[dict]:
    out = []
    for i, m in enumerate(fields.get("conversations") or []):
        if not isinstance(m, dict) or "from" not in m:
            raise RowProblem("missing field", f"conversations[{i}] has no 'from'")
        role = SHAREGPT_ROLES.get(str(m["from"]).lower())
        if role is None:
            raise RowProblem("unknown role", f"conversations[{i}] from {m['from']!r}; expected system, human or gpt")
        out.append({"role": role, "content": _text(m.get("value"), f"conversations[{i}].value")})
    return out


def _check_order(messages: list[dict]) -> None:
    """Optional system first, then user/assistant alternating from user, ending with an assistant turn."""
    for i, m in enumerate(messages):
        if m["role"] != "system" and not m["content"].strip():
            raise RowProblem("empty content", f"turn {i} ({m['role']}) is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem("no assistant turn", f"roles: {[m['role'] for m in messages]}")
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    roles = [m["role"] for m in turns]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or roles[-1] != "assistant":
        raise RowProblem("wrong role order", f"roles {roles}; expected user, assistant, user, ... ending with assistant")
