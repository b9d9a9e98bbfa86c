"""JSON text to records, defensively: one hostile row (too deep, NaN, lone surrogates, not an object) is that row's
problem, never the file's; and a .json array is read in chunks, one element at a time, never whole.

Python's `json` parser recurses once per bracket, so a row of 20,000 nested brackets raises RecursionError, and it
accepts NaN/Infinity and unpaired surrogates (`"\\ud800"`), which later fail in UTF-8 encoders or Arrow. Every row
is therefore bracket-counted before parsing (no recursion), parsed with NaN/Infinity refused, and its strings are
checked for surrogates.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from cluster.data.drops import RowProblem

MAX_DEPTH = 64  # nesting deeper than any record shape needs (tool schemas included); deeper rows are dropped
CHUNK = 1 << 18  # 256 KiB of bytes per read
_STRUCTURE = re.compile(r'["\[\]{}]')
_VALUE_PART = re.compile(r'["\[\]{},]')
_KEY_OR_OPEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]', re.DOTALL)
_STRING_END = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER = json.JSONDecoder()
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Deepest bracket nesting in JSON text, counted without recursion; stops counting once past `limit`."""
    depth = deepest = 0
    pos = 0
    while True:
        m = _STRUCTURE.search(text, pos)
        if m is None:
            return deepest
        ch = m.group()
        if ch == '"':
            end = _STRING_END.match(text, m.end())
            if end is None:
                return deepest  # unterminated string: the parser will name it
            pos = end.end()
            continue
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        pos = m.end()


def parse_record(text: str) -> dict:
    """One JSON object from text; raises RowProblem (unparseable / not utf-8) naming what is wrong."""
    if _ESCAPED_BYTE.search(text):
        at = _ESCAPED_BYTE.search(text).start()
        raise RowProblem("not utf-8", f"byte 0x{ord(text[at]) - 0xDC00:02x} at column {at + 1} is not UTF-8")
    if (text.count("[") + text.count("{") > MAX_DEPTH) and nesting_depth(text) > MAX_DEPTH:
        raise RowProblem("unparseable", f"nested more than {MAX_DEPTH} levels deep")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise RowProblem("unparseable", f"invalid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:  # NaN, Infinity, -Infinity
        raise RowProblem("unparseable", str(e)) from None
    except RecursionError:  # a limit lower than MAX_DEPTH in this interpreter
        raise RowProblem("unparseable", "nested too deep to parse") from None
    if not isinstance(obj, dict):
        raise RowProblem("unparseable", f"a record is a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):  # only a \uD800-\uDFFF escape can make an unpaired surrogate
        check_strings(obj)
    return obj


def check_strings(value) -> None:
    """Raise RowProblem when any key or string inside `value` holds an unpaired surrogate (not encodable as UTF-8)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                ch = _SURROGATE.search(v).group()
                raise RowProblem("not utf-8", f"unpaired surrogate \\u{ord(ch):04x} in a string")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def decoded_chunks(binary, digest=None) -> Iterator[str]:
    """Text of a binary file in chunks; bytes that are not UTF-8 become surrogate escapes that parse_record names."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    while True:
        data = binary.read(CHUNK)
        if digest is not None:
            digest.update(data)
        if not data:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            return
        yield decoder.decode(data)


def iter_array(chunks: Iterator[str]) -> Iterator[tuple[int, str | None, str | None]]:
    """(line, element text, problem) for each element of the JSON array that the text opens with.

    Also accepts an object holding exactly one array of records (`{"data": [...]}`). Element boundaries are found by
    counting brackets outside strings, so a broken or hostile element is skipped alone and the scan goes on.
    `problem` is set (and the text None) for what is not an element at all, e.g. a second array in the wrapper.
    """
    scan = _Scanner(chunks)
    first = scan.skip_space()
    if first == "{":
        scan.pos += 1
        if not scan.seek_array():
            yield scan.line, None, "a .json source is an array of records or an object with one array of records"
            return
    elif first != "[":
        yield scan.line, None, "a .json source is an array of records (or JSON Lines)"
        return
    scan.pos += 1
    while True:
        ch = scan.skip_space(",")
        if ch is None:
            yield scan.line, None, "the file ends inside the records array"
            return
        if ch == "]":
            return
        line = scan.line
        yield line, scan.take_value(), None


class _Scanner:
    """A cursor over chunked text that can take one JSON value at a time without parsing it."""

    def __init__(self, chunks: Iterator[str]):
        self.chunks, self.buf, self.pos, self.line, self.done = chunks, "", 0, 1, False

    def _more(self) -> bool:
        if self.done:
            return False
        nxt = next(self.chunks, None)
        if nxt is None:
            self.done = True
            return False
        self.buf = self.buf[self.pos :] + nxt
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def skip_space(self, also: str = "") -> str | None:
        """Move past whitespace (and `also` characters); the next character, or None at the end."""
        while True:
            while self.pos < len(self.buf) and (self.buf[self.pos].isspace() or self.buf[self.pos] in also):
                self._advance(self.pos + 1)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return None

    def seek_array(self) -> bool:
        """Inside the wrapping object: move to the '[' of the first value that is an array."""
        while True:
            m = _KEY_OR_OPEN.search(self.buf, self.pos)
            if m is None or (m.group().startswith('"') and m.end() == len(self.buf)):
                if not self._more():
                    return False
                continue
            if m.group() == "[":
                self._advance(m.start())
                return True
            if m.group() == "{":
                return False
            self._advance(m.end())

    def take_value(self) -> str:
        """The text of the JSON value at the cursor (an object, array or scalar), moving past it."""
        try:  # fast path: the C parser finds the end of a well-formed value that is wholly in the buffer
            end = _DECODER.raw_decode(self.buf, self.pos)[1]
            if end < len(self.buf) or self.done:
                return self._cut(self.pos, end)
        except (ValueError, RecursionError):
            pass  # broken, hostile or cut off by the chunk: find its end by counting brackets
        start, depth, pos = self.pos, 0, self.pos
        while True:
            m = _VALUE_PART.search(self.buf, pos)
            if m is None:
                keep = len(self.buf) - start
                if not self._more():
                    return self._cut(start, len(self.buf))
                start, pos = 0, keep
                continue
            ch = m.group()
            if ch == '"':
                end = _STRING_END.match(self.buf, m.end())
                if end is None:
                    keep, pos_rel = len(self.buf) - start, m.start() - start
                    if not self._more():
                        return self._cut(start, len(self.buf))
                    start, pos = 0, pos_rel
                    continue
                pos = end.end()
            elif ch in "[{":
                depth += 1
                pos = m.end()
            elif ch in "]}" and depth > 0:
                depth -= 1
                pos = m.end()
                if depth == 0:
                    return self._cut(start, pos)
            else:  # ',' or the array's ']' ends a scalar (or, at depth > 0, is inside the value)
                if depth == 0:  # a stray closing bracket is a (broken) value of its own, so the scan moves on
                    return self._cut(start, m.end() if m.start() == start else m.start())
                pos = m.end()

    def _cut(self, start: int, end: int) -> str:
        text = self.buf[start:end]
        self.pos = start
        self._advance(end)
        return text.strip()
