"""OpenAI's grader templates: `{{sample.output_text}}`, `{{sample.output_json.KEY}}` and `{{item.FIELD}}`."""

from __future__ import annotations

import json
import re

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_KEY = r"[A-Za-z_][\w-]*"
REFERENCE = re.compile(rf"^(sample\.output_text|sample\.output_json(\.{_KEY})*|item(\.{_KEY})+)$")
FIX = "write {{sample.output_text}}, {{sample.output_json.KEY}} or {{item.FIELD}} (a field of the data row)."


class TemplateError(Exception):
    """A template names a value the sample or item does not have."""


def template_error(text: str) -> str | None:
    """Why a template cannot be rendered (an unknown reference, an unclosed brace), or None."""
    for ref in PLACEHOLDER.findall(text):
        if not REFERENCE.match(ref.strip()):
            return f"'{{{{{ref}}}}}' is not a template this grader knows."
    rest = PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        return "has an unclosed '{{' or a stray '}}'."
    return None


def item_fields(text: str) -> set[str]:
    """The top-level row fields a template reads (`{{item.a.b}}` reads `a`)."""
    refs = (ref.strip() for ref in PLACEHOLDER.findall(text))
    return {ref.split(".")[1] for ref in refs if ref.startswith("item.") and REFERENCE.match(ref)}


def make_sample(output_text: str) -> dict:
    """A sample as graders see it: the answer text and, when it parses as JSON, its value."""
    try:
        parsed = json.loads(output_text)
    except ValueError:
        parsed = None
    return {"output_text": output_text, "output_json": parsed}


def render(text: str, sample: dict, item: dict) -> str:
    """The template with every reference replaced by its value (JSON for values that are not strings)."""

    def value(match: re.Match) -> str:
        ref = match.group(1).strip()
        head, *path = ref.split(".")
        found = {"sample": sample, "item": item}[head]
        for key in path:
            if not isinstance(found, dict) or key not in found:
                raise TemplateError(f"'{{{{{ref}}}}}' has no value: '{key}' is missing.")
            found = found[key]
        return found if isinstance(found, str) else json.dumps(found)

    return PLACEHOLDER.sub(value, text)
