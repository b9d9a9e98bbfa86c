"""Reading a spec from YAML or a dict: every problem collected, each with its field path, line and fix."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cluster.spec.base import Problem, Section, SpecError, dotted
from cluster.spec.job import SECTIONS, JobSpec, all_problems
from cluster.spec.reader import read_yaml_file


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML spec file; raises SpecError naming the file, every field, line and fix.

    The file is read defensively (cluster/spec/reader.py): size, nesting and alias expansion are bounded, bad UTF-8
    is named by its byte offset, and a key given twice is an error naming both lines.
    """
    doc = read_yaml_file(path, "spec")
    return validate_spec(doc.data, source=str(path), lines=doc.lines)


def validate_spec(data: Any, source: str | None = None, lines: dict[tuple, int] | None = None) -> JobSpec:
    """Validate a plain dict (e.g. one that crossed the Ray boundary); raises SpecError with every problem."""
    return validate_model(JobSpec, data, source, lines, partial_rules=_rules_on_valid_sections)


M = TypeVar("M", bound=Section)


def validate_model(
    cls: type[M],
    data: Any,
    source: str | None = None,
    lines: dict[tuple, int] | None = None,
    partial_rules: Callable[[dict], list[Problem]] | None = None,
) -> M:
    """The one validation front end of job specs and Serve args: `cls` validated from plain data, or a SpecError.

    Every problem is collected: pydantic's (each with its field path, the line from `lines`, and the fix from the
    field's description) and the rules of `cls.problems()`. `partial_rules(data)` adds the rules that can still run
    when some fields are invalid, so one typo hides nothing.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    "(root)",
                    f"expected a mapping of keys, got {_kind(data)}.",
                    f"write key: value pairs, starting with: {', '.join(_required(cls))}.",
                )
            ],
            source,
        )
    try:
        parsed = cls.model_validate(data)
    except SpecError as e:
        problems = e.problems
    except ValidationError as e:
        problems = [_from_pydantic(cls, err) for err in e.errors()] + (partial_rules(data) if partial_rules else [])
    except RecursionError:
        problems = [Problem("(root)", "values are nested too deeply to validate.", "flatten the structure.")]
    else:
        problems = parsed.problems()
        if not problems:
            return parsed
    raise SpecError([_with_line(p, lines) for p in problems], source) from None


def _kind(data: Any) -> str:
    return "nothing (an empty document)" if data is None else f"a {type(data).__name__}"


def _required(cls: type[BaseModel]) -> list[str]:
    return [name for name, f in cls.model_fields.items() if f.is_required()] or list(cls.model_fields)


def _rules_on_valid_sections(data: dict) -> list[Problem]:
    """Run rules on every section that validates once its broken keys are set aside, so one typo hides nothing."""
    parts, valid, broken = {}, set(), set()
    for name in SECTIONS:
        field = JobSpec.model_fields[name]
        raw = data.get(name)
        if raw is None:
            if not field.is_required():
                parts[name] = field.get_default(call_default_factory=True)
                valid.add(name)
            continue
        if not isinstance(raw, dict):
            continue
        try:
            parts[name] = field.annotation.model_validate(raw)
        except ValidationError as e:
            bad = {err["loc"][0] for err in e.errors() if err["loc"]}
            broken |= {f"{name}.{key}" for key in bad}
            try:
                parts[name] = field.annotation.model_validate({k: v for k, v in raw.items() if k not in bad})
            except ValidationError:
                continue
        valid.add(name)
    found = all_problems(JobSpec.model_construct(**parts), valid)
    return [p for p in found if not any(p.field == b or p.field.startswith(b + ".") for b in broken)]


def _from_pydantic(cls: type[BaseModel], err: dict) -> Problem:
    loc = dotted(err["loc"]) or "(root)"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key, parent = str(err["loc"][-1]), err["loc"][:-1]
        known = sorted(_fields_at(cls, parent))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return Problem(loc, f"unknown key '{key}'.", f"{hint}known keys here: {', '.join(known)}.")
    if kind == "missing":
        about = _description(cls, err["loc"])
        return Problem(loc, "required field is missing.", f"add '{err['loc'][-1]}'" + (f" ({about})." if about else "."))
    msg = err["msg"].removeprefix("Value error, ")
    name = next((p for p in reversed(err["loc"]) if isinstance(p, str)), loc)
    about = _description(cls, err["loc"])
    return Problem(loc, f"{msg} (got {_short(value)}).", f"set {name} to a valid value" + (f": {about}" if about else "."))


def _short(value: Any, limit: int = 80) -> str:
    """A value as the user wrote it, cut short: a 1 MB string or a deep mapping must not flood the message."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlevel = 2
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _walk(cls: Any, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a location path below `cls`, following list indices."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        cls = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return None
    return cls


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    cls = _walk(root, loc)
    return list(cls.model_fields) if cls else []


def _description(root: type[BaseModel], loc: tuple) -> str:
    parent = _walk(root, tuple(loc[:-1]))
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    field = parent.model_fields.get(name) if parent else None
    return field.description if field and field.description else ""


def _with_line(p: Problem, lines: dict[tuple, int]) -> Problem:
    parts = tuple(p.field.split("."))
    while parts and parts not in lines:
        parts = parts[:-1]
    return Problem(p.field, p.problem, p.fix, lines.get(parts)) if parts else p
