"""A source's `fields:` and `roles:` mapping: the user's own keys renamed to the parts the record shapes use."""

from __future__ import annotations

from cluster.data.drops import RowProblem

INSIDE_MESSAGES = ("role", "content")


def apply_fields(fields: dict, mapping: dict[str, str]) -> dict:
    """The record with each mapped key renamed to its part (e.g. question -> prompt); role/content are renamed inside
    every list of messages. A record without a mapped key raises RowProblem naming the key."""
    if not mapping:
        return fields
    renamed = {part: key for part, key in mapping.items() if part not in INSIDE_MESSAGES}
    for part, key in renamed.items():
        if fields.get(key) is None:  # absent, or empty in a short CSV row
            raise RowProblem("missing field", f"no {key!r} (mapped to {part} by fields:)")
    # every mapped key leaves before any part is set: one key may feed two parts, one of them under its own name
    out = {k: v for k, v in fields.items() if k not in renamed.values()}
    out.update({part: fields[key] for part, key in renamed.items()})
    inner = {mapping[p]: p for p in INSIDE_MESSAGES if p in mapping}
    if inner:
        for part, value in out.items():
            if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
                out[part] = [{inner.get(k, k): v for k, v in m.items()} for m in value]
    return out
