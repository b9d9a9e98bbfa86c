"""Reading a spec from YAML or a dict: every problem collected, each with its field path, line and fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cluster.spec.base import Problem, SpecError
from cluster.spec.job import SECTIONS, JobSpec, all_problems


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML spec file; raises SpecError naming the file, every field, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([Problem("(file)", f"spec file {str(path)!r} does not exist.", "check the path.")], str(path))
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([Problem("(yaml)", f"not valid YAML: {getattr(e, 'problem', e)}.", "fix the YAML syntax.", line)], str(path)) from None
    return validate_spec(data, source=str(path), lines=_line_index(node))


def validate_spec(data: Any, source: str | None = None, lines: dict[tuple, int] | None = None) -> JobSpec:
    """Validate a plain dict (e.g. one that crossed the Ray boundary); raises SpecError with every problem."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem("(root)", f"a spec is a mapping of sections, got {type(data).__name__}.",
                                 f"start the file with sections: {', '.join(SECTIONS)}.")], source)
    try:
        return JobSpec.model_validate(data)
    except SpecError as e:
        problems = e.problems
    except ValidationError as e:
        problems = [_from_pydantic(err) for err in e.errors()] + _rules_on_valid_sections(data)
    raise SpecError([_with_line(p, lines) for p in problems], source) from None


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


def _from_pydantic(err: dict) -> Problem:
    loc = ".".join(str(x) for x in err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key, parent = str(err["loc"][-1]), err["loc"][:-1]
        known = sorted(_fields_at(parent))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return Problem(loc, f"unknown key '{key}'.", f"{hint}known keys here: {', '.join(known)}.")
    if kind == "missing":
        return Problem(loc, "required field is missing.", f"add '{err['loc'][-1]}' ({_description(err['loc'])}).")
    msg = err["msg"].removeprefix("Value error, ")
    name = next((p for p in reversed(err["loc"]) if isinstance(p, str)), loc)
    return Problem(loc, f"{msg} (got {value!r}).", f"set {name} to a valid value: {_description(err['loc'])}")


def _walk(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a location path, following list indices."""
    cls: Any = JobSpec
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


def _fields_at(loc: tuple) -> list[str]:
    cls = _walk(loc)
    return list(cls.model_fields) if cls else []


def _description(loc: tuple) -> str:
    parent = _walk(tuple(p for p in loc[:-1]))
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    field = parent.model_fields.get(name) if parent else None
    return field.description if field and field.description else ""


def _line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path of a YAML document to its 1-based line."""
    out: dict[tuple, int] = {}

    def visit(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                out[(*path, k.value)] = k.start_mark.line + 1
                visit(v, (*path, k.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                out[(*path, str(i))] = v.start_mark.line + 1
                visit(v, (*path, str(i)))

    if node is not None:
        visit(node, ())
    return out


def _with_line(p: Problem, lines: dict[tuple, int]) -> Problem:
    parts = tuple(p.field.split("."))
    while parts and parts not in lines:
        parts = parts[:-1]
    return Problem(p.field, p.problem, p.fix, lines.get(parts)) if parts else p
