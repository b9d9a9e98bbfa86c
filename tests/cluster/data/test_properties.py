"""Property-based tests (hypothesis): for any input, every data reader and record-shape parser gives a valid result
or a named problem (a Drop, RowProblem or UserError), never an unhandled exception. Failing examples found so far
are kept with @example as regression cases."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cluster.data.drops import REASONS, Drop, RowProblem
from cluster.data.formats import FORMATS, TRAINABLE, _signatures, to_sample
from cluster.data.json_rows import decoded_chunks, iter_array, parse_record
from cluster.data.mapping import apply_fields
from cluster.data.sources import Record, stream_source
from cluster.errors import UserError
from cluster.spec import SourceSpec

BUDGET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = st.sampled_from(
    [
        "text",
        "prompt",
        "completion",
        "messages",
        "conversations",
        "instruction",
        "input",
        "output",
        "ideal",
        "chosen",
        "rejected",
        "label",
        "tools",
        "system",
        "role",
        "content",
        "from",
        "value",
        "tool_calls",
        "weight",
        "function",
        "name",
        "arguments",
        "x",
    ]
)
ROLES = st.sampled_from(["system", "user", "assistant", "tool", "human", "gpt", "bot", "", None, 3])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": SCALARS,
        "tool_calls": st.lists(st.dictionaries(KEYS, SCALARS | st.dictionaries(KEYS, SCALARS), max_size=3), max_size=2),
        "weight": SCALARS,
    },
)
VALUES = st.recursive(
    SCALARS | st.lists(MESSAGE, max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
RECORDS = st.dictionaries(KEYS, VALUES, max_size=6)


@BUDGET
@given(RECORDS, st.sampled_from(FORMATS))
@example({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}, "messages")
@example({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"function": 1}]}]}, "messages")
@example({"prompt": "", "completion": []}, "prompt_completion")
@example({"input": None, "ideal": []}, "openai_evals")
def test_to_sample_gives_a_sample_or_a_named_row_problem(record, fmt):
    _signatures(record)
    try:
        sample = to_sample(record, fmt, "Be brief.", {"bot": "assistant"})
    except RowProblem as p:
        assert p.reason in REASONS
        return
    assert fmt in TRAINABLE
    json.dumps(sample)  # what the pipeline stores
    if sample["messages"] is not None:
        assert len(sample["train"]) == len(sample["messages"]) and any(sample["train"])
        assert sample["messages"][-1]["role"] == "assistant"
        assert all(isinstance(m["content"], str) for m in sample["messages"])


@BUDGET
@given(RECORDS, st.dictionaries(st.sampled_from(["prompt", "completion", "messages", "role", "content"]), KEYS, max_size=3))
@example({"text": []}, {"prompt": "text", "completion": "text"})  # found by hypothesis: one key mapped twice
@example({"prompt": []}, {"prompt": "prompt", "completion": "prompt"})  # found by hypothesis: ... once to its own name
def test_mapping_renames_or_names_the_missing_key(record, mapping):
    try:
        out = apply_fields(record, mapping)
    except RowProblem as p:
        assert p.reason == "missing field" and "mapped to" in p.detail
        return
    assert all(part in out for part in mapping if part not in ("role", "content"))


@BUDGET
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")))
@example("[" * 20_000 + "]" * 20_000)
@example('{"a": NaN}')
@example('{"a": "\\udc80"}')
@example('{"a": 1}{')
def test_parse_record_gives_a_dict_or_a_named_problem(text):
    try:
        record = parse_record(text)
    except RowProblem as p:
        assert p.reason in ("unparseable", "not utf-8")
        return
    assert isinstance(record, dict)
    json.dumps(record).encode("utf-8")  # no NaN-free, surrogate-free guarantee would let this fail


def _lines(chunks: list[bytes]) -> bytes:
    return b"\n".join(chunks)


JSONISH = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b'{"text": "ok"}',
                b'{"instruction": "q", "output": "a"}',
                b"[",
                b"]",
                b"{",
                b",",
                b'"',
                b"\\",
                b'{"a": NaN}',
                b'"\\ud800"',
                b"\xff\xfe",
                b"[" * 200,
            ]
        ),
    ),
    max_size=12,
)


@BUDGET
@given(JSONISH, st.sampled_from(["jsonl", "json", "csv"]))
@example([b"[", b'{"text": "a"}', b'"unterminated'], "json")
@example([b"[", b"}", b'{"text": "a"}]'], "json")
@example([b'{"data": [', b'{"text": "a"}', b"]}"], "json")
@example([b"\xef\xbb\xbfinstruction,output", b"q,\x00a"], "csv")
def test_any_file_yields_records_or_drops(tmp_path_factory, parts, kind):
    path = tmp_path_factory.mktemp("prop") / f"f.{kind}"
    path.write_bytes(_lines(parts))
    try:
        items = list(stream_source(SourceSpec(path=str(path))))
    except UserError as e:  # a whole-file problem names the file and the fix
        assert str(path) in str(e) and "Fix:" in str(e), str(e)
        return
    for item in items:
        assert isinstance(item, (Record, Drop))
        if isinstance(item, Record):
            assert isinstance(item.fields, dict) and item.where.startswith(f"{path}:")
        else:
            assert item.reason in REASONS and item.where.startswith(f"{path}:")


@BUDGET
@given(
    st.lists(st.sampled_from(['{"a": 1}', "[1, 2]", '"s"', "3", "{", "}", "[", "]", ",", '"\\"', " ", "\n", "nul"]), max_size=30),
    st.integers(1, 8),
)
@example(["}"], 1)  # found by hypothesis: a stray closing bracket made the scanner loop forever
@example(['"\\"', "]"], 2)
def test_array_scanner_always_ends(tokens, chunk):
    text = "[" + "".join(tokens)
    items = list(iter_array(iter([text[i : i + chunk] for i in range(0, len(text), chunk)])))
    assert all(isinstance(line, int) and line >= 1 for line, _, _ in items)


def test_decoded_chunks_keep_bad_bytes_visible():
    import io

    text = "".join(decoded_chunks(io.BytesIO(b'{"a": "caf\xe9"}')))
    assert text == '{"a": "caf\udce9"}'  # the Latin-1 byte survives decoding as a surrogate escape
    try:
        parse_record(text)
    except RowProblem as e:  # ... and the parser names it, with its column, instead of reading a wrong string
        assert (e.reason, e.detail) == ("not utf-8", "byte 0xe9 at column 11 is not UTF-8")
    else:
        raise AssertionError("a record holding a byte that is not UTF-8 was parsed")
