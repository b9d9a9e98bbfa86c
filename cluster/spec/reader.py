"""Reading a YAML file that may be hostile: bounded size, depth and alias expansion, strict UTF-8, no duplicate keys.

PyYAML reads any document it is given: aliases are expanded by whoever walks the result (a 317-byte file of 9 levels
of 9 aliases becomes 387 million values), its composer recurses once per nesting level, and a repeated key silently
keeps the last value. So the event stream is checked first, without building anything (PyYAML's parser keeps its own
stack, not Python's), and the document is built only once it is known to be small, shallow and unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.spec.base import Problem, SpecError, dotted

MAX_BYTES = 1 << 20  # a spec is a few KB; a chat template a few more
MAX_DEPTH = 64  # nesting levels, aliases expanded; specs use about 5
MAX_VALUES = 10_000  # scalars and collections once every alias is expanded; specs hold about 100


@dataclass(frozen=True)
class Document:
    """A YAML document read safely: its plain data, and the line of each key path (`("data", "train", "0")` -> 7)."""

    data: Any
    lines: dict[tuple, int]


def read_yaml_file(path: str | Path, what: str = "spec") -> Document:
    """Read one YAML document from a file; any problem (missing, too big, not UTF-8, not YAML) is a SpecError."""
    path, source = Path(path), str(path)
    if not path.is_file():
        why = "is not a regular file" if path.exists() else "does not exist"
        raise _error(source, "(file)", f"{what} file {source!r} {why}.", "check the path.")
    chunks, size = [], 0
    try:
        with open(path, "rb") as f:  # in chunks: bounded even where stat knows no size (pipes, /dev/zero)
            while size <= MAX_BYTES and (chunk := f.read(1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
    except OSError as e:
        raise _error(
            source, "(file)", f"{what} file {source!r} cannot be read ({e.strerror or e}).", "check the path and its permissions."
        ) from None
    raw = b"".join(chunks)
    return read_yaml_bytes(raw, source, what)


def read_yaml_bytes(raw: bytes, source: str, what: str = "spec") -> Document:
    """Read one YAML document from bytes (UTF-8, an optional BOM); see `read_yaml_file`."""
    if len(raw) > MAX_BYTES:
        raise _error(
            source,
            "(file)",
            f"the file is larger than {MAX_BYTES // 1024} KiB, too big for a {what}.",
            f"check that this is the {what} you meant; a {what} is a few KB of YAML.",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise _error(
            source,
            "(encoding)",
            f"byte {e.start} (line {line}) is not UTF-8 ({raw[e.start : e.start + 1].hex()}: {e.reason}).",
            "save the file as UTF-8.",
        ) from None
    return read_yaml_text(text, source, what)


def read_yaml_text(text: str, source: str, what: str = "spec") -> Document:
    """Read one YAML document from text; see `read_yaml_file`."""
    if len(text) > MAX_BYTES:
        raise _error(
            source,
            "(file)",
            f"the text is longer than {MAX_BYTES // 1024} KiB, too long for a {what}.",
            f"a {what} is a few KB of YAML.",
        )
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            duplicates = _duplicate_keys(node)
            if duplicates:
                raise SpecError(duplicates, source)
            lines = _line_index(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Refused as e:
        raise _error(source, "(yaml)", e.problem, e.fix, e.line) from None
    except yaml.constructor.ConstructorError as e:  # parsed, but a value is not plain data (a !!tag, a bad date)
        raise _error(
            source,
            "(yaml)",
            f"a value cannot be read: {_yaml_reason(e)}.",
            "use plain YAML values (no !!tags); quote a value to keep it as text.",
            _yaml_line(e),
        ) from None
    except yaml.YAMLError as e:
        raise _error(source, "(yaml)", f"not valid YAML: {_yaml_reason(e)}.", "fix the YAML syntax.", _yaml_line(e)) from None
    return Document(data, lines)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose values that Python refuses (2024-13-45, a 5,000-digit int) fail as YAML errors with a line."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            value = str(node.value)[:40] + ("..." if len(str(node.value)) > 40 else "")
            reason = str(e).split(";")[0].splitlines()[0][:200]
            raise yaml.constructor.ConstructorError(
                None, None, f"the value {value!r} cannot be read ({reason}); quote it to keep it as text", node.start_mark
            ) from None


class _Refused(Exception):
    def __init__(self, problem: str, fix: str, line: int | None):
        super().__init__(problem)
        self.problem, self.fix, self.line = problem, fix, line


def _check_events(text: str) -> None:
    """Refuse, from the event stream alone, documents that nest too deep or whose aliases expand to too many values."""
    done: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels) of its finished node
    stack: list[list] = []  # open collections: [anchor, values so far, deepest levels below]
    total = aliases = 0  # values so far, every alias expanded
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1, 0])
            total += 1
            if len(stack) > MAX_DEPTH:
                raise _Refused(
                    f"values are nested more than {MAX_DEPTH} levels deep.",
                    "flatten the structure; a spec nests a few levels.",
                    line,
                )
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, size, below = stack.pop()
            levels = below + 1
            if anchor is not None:
                done[anchor] = (size, levels)
        elif isinstance(event, yaml.ScalarEvent):
            size, levels = 1, 0
            total += 1
            if event.anchor is not None:
                done[event.anchor] = (size, levels)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in done:
                if any(frame[0] == event.anchor for frame in stack):
                    raise _Refused(
                        f"alias *{event.anchor} refers to a value that contains it, which never ends.",
                        "remove the alias or point it at a finished value.",
                        line,
                    )
                continue  # an undefined alias: the composer reports it with its line
            size, levels = done[event.anchor]
            total += size
            aliases += 1
        else:
            continue
        if total > MAX_VALUES:
            if aliases:
                raise _Refused(
                    f"the document holds more than {MAX_VALUES:,} values once its {aliases} aliases (*name) "
                    "are expanded; an alias bomb is refused before it is built.",
                    "write the values out, or use far fewer aliases.",
                    line,
                )
            raise _Refused(
                f"the document holds more than {MAX_VALUES:,} values.",
                "check that this is the file you meant; a spec holds a few hundred values at most.",
                line,
            )
        if stack:
            stack[-1][1] += size
            stack[-1][2] = max(stack[-1][2], levels)
            if len(stack) + levels > MAX_DEPTH:
                raise _Refused(
                    f"values are nested more than {MAX_DEPTH} levels deep once aliases are expanded.",
                    "flatten the structure or use fewer aliases.",
                    line,
                )


def _duplicate_keys(node: yaml.Node | None) -> list[Problem]:
    """Every key written twice in one mapping, naming both lines (PyYAML would keep the last one silently)."""
    found, seen_nodes, todo = [], set(), [(node, ())]
    while todo:
        n, path = todo.pop()
        if n is None or id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    key, line = (k.tag, k.value), k.start_mark.line + 1
                    where = dotted((*path, k.value))
                    if key in first:
                        found.append(
                            Problem(
                                where,
                                f"key '{k.value}' is given twice, on lines {first[key]} and {line}.",
                                "keep one of them (YAML would silently use the last).",
                                line,
                            )
                        )
                    else:
                        first[key] = line
                todo.append((v, (*path, str(k.value))))
        elif isinstance(n, yaml.SequenceNode):
            todo.extend((v, (*path, str(i))) for i, v in enumerate(n.value))
    return sorted(found, key=lambda p: p.line or 0)


def _line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path of a document to its 1-based line (aliases expanded, which `_check_events` bounded)."""
    out: dict[tuple, int] = {}
    todo = [(node, ())]
    while todo:
        n, path = todo.pop()
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*path, str(k.value))
                out.setdefault(key, k.start_mark.line + 1)
                todo.append((v, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                key = (*path, str(i))
                out.setdefault(key, v.start_mark.line + 1)
                todo.append((v, key))
    return out


def _yaml_reason(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):
        char = chr(e.character) if isinstance(e.character, int) else e.character
        return f"character {char!r} (position {e.position}) is not allowed in YAML"
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    reason = ", ".join(str(p) for p in parts if p) or str(e)
    return " ".join(reason.split())[:300]


def _yaml_line(e: yaml.YAMLError) -> int | None:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark else None


def _error(source: str, field: str, problem: str, fix: str, line: int | None = None) -> SpecError:
    return SpecError([Problem(field, problem, fix, line)], source)
