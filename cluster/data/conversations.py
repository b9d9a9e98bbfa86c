"""Message lists as users bring them (role/content or from/value, OpenAI tool calls, `weight: 0` turns) to clean
chat-template messages, with which assistant turns are trained, and the role-order rules every conversation obeys."""

from __future__ import annotations

import json

from cluster.data.drops import RowProblem

ROLE_NAMES = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "tool": "tool",
    "ipython": "tool",
    "function": "tool",
}


def text_of(value, what: str) -> str:
    """A message's content as a string; OpenAI content-part lists keep their text parts."""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        value = "".join(p.get("text", "") for p in value if p.get("type", "text") == "text")
    if value is None:
        raise RowProblem("missing field", f"{what} is missing")
    if not isinstance(value, str):
        raise RowProblem("missing field", f"{what} is a {type(value).__name__}, not text")
    return value


def normalize(raw, what: str, roles: dict[str, str]) -> tuple[list[dict], list[bool]]:
    """Clean messages and, per message, whether it is trained (assistant turns without `weight: 0`).

    Each message may use role/content or from/value keys; role names are looked up in `roles` (the source's
    mapping) and then in ROLE_NAMES.
    """
    role_key, content_key = "role", "content"
    if not isinstance(raw, list):
        raise RowProblem("missing field", f"{what} is a {type(raw).__name__}, not a list of messages")
    messages, trained = [], []
    for i, m in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(m, dict):
            raise RowProblem("missing field", f"{where} is a {type(m).__name__}, not a message object")
        name = m.get(role_key, m.get("from")) if role_key in m or "from" in m else None
        if name is None:
            raise RowProblem("missing field", f"{where} has no '{role_key}' (or 'from')")
        role = roles.get(str(name)) or ROLE_NAMES.get(str(name).lower())
        if role is None:
            known = sorted({*roles, "system", "user", "assistant", "tool", "human", "gpt"})
            raise RowProblem(
                "unknown role", f"{where} role {name!r}; expected one of {', '.join(known)} (or map it with roles: on the source)"
            )
        if role == "tool" and not (messages and (messages[-1].get("tool_calls") or messages[-1]["role"] == "tool")):
            raise RowProblem(
                "unknown role",
                f"{where} role {name!r} outside a tool call; a tool result must follow an assistant turn with tool_calls",
            )
        content = m.get(content_key, m.get("value")) if content_key in m or "value" in m else None
        out = {"role": role}
        if role == "assistant" and m.get("tool_calls"):
            out["content"] = text_of(content, f"{where}.{content_key}") if content is not None else ""
            out["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(m["tool_calls"])]
        else:
            out["content"] = text_of(content, f"{where}.{content_key}")
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if isinstance(m.get(key), str):
                    out[key] = m[key]
        messages.append(out)
        trained.append(role == "assistant" and m.get("weight", 1) not in (0, 0.0, False))
    return messages, trained


def _tool_call(call, where: str) -> dict:
    """An OpenAI tool call with its arguments as a dict (what HF chat templates expect for `tojson`)."""
    if not isinstance(call, dict):
        raise RowProblem("missing field", f"{where} is not an object")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RowProblem("missing field", f"{where} has no function name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise RowProblem("unparseable", f"{where}.function.arguments is not JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise RowProblem("missing field", f"{where}.function.arguments is a {type(args).__name__}, not an object")
    out = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tools_of(value, what: str = "'tools'") -> list[dict] | None:
    """The tool schemas of a record (OpenAI `tools`, or JSON text of them), or None when there are none."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowProblem("unparseable", f"{what} is not JSON ({e.msg})") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowProblem("missing field", f"{what} is not a list of tool schemas")
    return value


def check_order(messages: list[dict], trained: list[bool]) -> None:
    """Optional system first; then user; assistant after user or tool results; tool results only answer an
    assistant's tool calls; the conversation ends with an assistant turn and trains at least one."""
    for i, m in enumerate(messages):
        if m["role"] not in ("system", "tool") and not m["content"].strip() and not m.get("tool_calls"):
            raise RowProblem("empty content", f"turn {i} ({m['role']}) is empty")
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise RowProblem("no assistant turn", f"roles: {roles}")
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    expected = "user"
    for m in turns:
        role = m["role"]
        ok = {
            "user": role == "user",
            "assistant": role == "assistant",
            "tool": role == "tool",
            "tool or assistant": role in ("tool", "assistant"),
        }[expected]
        if not ok:
            raise RowProblem(
                "wrong role order",
                f"roles {[t['role'] for t in turns]}; expected user, assistant, user, "
                "... (tool results right after an assistant's tool calls) ending with assistant",
            )
        if role == "user":
            expected = "assistant"
        elif role == "assistant":
            expected = "tool" if m.get("tool_calls") else "user"
        else:
            expected = "tool or assistant"
    if turns[-1]["role"] != "assistant":
        raise RowProblem(
            "wrong role order", f"roles {[t['role'] for t in turns]}; the conversation must end with an assistant turn"
        )
    if not any(trained):
        raise RowProblem("no assistant turn", "every assistant turn has weight: 0, so nothing would be trained")
