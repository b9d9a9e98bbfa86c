"""Property tests: whatever text, bytes or plain data reaches the spec loader (or the Serve args), the answer is a
valid spec or a SpecError with its problems named, never another exception.

The example budget is fixed and the search is derandomized, so a CI run is repeatable; an input that once broke the
loader is kept below as an @example, so it is tried first on every run.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cluster.spec import JobSpec, SpecError, validate_spec
from cluster.spec.job import SECTIONS
from cluster.spec.reader import read_yaml_bytes, read_yaml_text
from serve.args import ServeArgs, parse_args

BUDGET = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Words a spec is made of, so random text often reaches validation instead of failing at the first character.
FIELDS = sorted(
    {name for section in SECTIONS for name in JobSpec.model_fields[section].annotation.model_fields}
    | set(SECTIONS)
    | set(ServeArgs.model_fields)
)
WORDS = FIELDS + [
    "embedded:smollm2-135m-instruct",
    "embedded:construction-faq",
    "lora",
    "qlora",
    "full",
    "zero3",
    "true",
    "null",
    "~",
    "0",
    "-1",
    "1e9",
    ".nan",
    ".inf",
    "2024-01-01",
    "0x1F",
    "<<",
    "'",
    '"',
]
TOKENS = WORDS + [
    ":",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!python/object ",
    "? ",
    "|\n",
    ">\n",
    "#",
    "---\n",
    "...\n",
    "\t",
    "%YAML 1.1\n",
    "\\",
    "\x00",
    "\ufeff",
    "\udcff",
    "é",
]


def yamlish() -> st.SearchStrategy[str]:
    """Lines of spec words and YAML punctuation at random indents."""
    line = st.tuples(st.integers(0, 6), st.lists(st.sampled_from(TOKENS), max_size=8))
    return st.lists(line, max_size=25).map(lambda lines: "".join(" " * i + "".join(t) + "\n" for i, t in lines))


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(WORDS)
keys = st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers(-2, 2)
plain_data = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=40
)


def spec_shaped() -> st.SearchStrategy[dict]:
    """A minimal valid spec with random values put at random known field paths: reaches the rules across fields."""
    base = {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": "embedded:construction-faq"}]},
        "output": {"name": "t"},
    }
    edit = st.tuples(st.sampled_from(SECTIONS), st.sampled_from(FIELDS), plain_data)

    def apply(edits):
        spec = {k: dict(v) for k, v in base.items()}
        for section, field, value in edits:
            spec.setdefault(section, {})[field] = value
        return spec

    return st.lists(edit, max_size=6).map(apply)


def answered(call, *args):
    """The call's result, or its SpecError checked to name every problem; any other exception fails the test."""
    try:
        return call(*args)
    except SpecError as e:
        assert e.problems and all(p.field and p.problem for p in e.problems), e.problems
        assert not any(str(p).rstrip().endswith(":") or "()" in p.fix for p in e.problems), e.problems
        assert str(e) and (len(e.problems) > 1 or "\n" not in str(e))
        return e


@BUDGET
@given(yamlish())
@example("a: &a [*a]\n")  # an alias inside its own anchor: a cycle
@example("model: 2024-13-45\n")  # a date Python refuses
@example("model:\n  base: a\n  base: b\n")
@example("model: [" * 100 + "]" * 100)
@example("? [a, b]\n: c\n")  # an unhashable key
@example("'': a\n'': b\n")  # an empty key given twice once gave a problem with an empty field name
@example("model: {base: x, lora: {r: .nan}}\ndata: {train: [{path: x}]}\noutput: {name: t}\n")
def test_any_yamlish_text_is_a_spec_or_a_named_error(text):
    doc = answered(read_yaml_text, text, "t.yaml")
    if not isinstance(doc, SpecError):
        result = answered(validate_spec, doc.data, "t.yaml", doc.lines)
        assert isinstance(result, (JobSpec, SpecError))


@BUDGET
@given(st.binary(max_size=400))
@example(b"\xff\xfe" + "model: x\n".encode("utf-16-le"))
@example(b"model: caf\xe9\n")
@example(b"\xef\xbb\xbfmodel: x\n")  # a UTF-8 BOM is fine
def test_any_bytes_are_read_or_refused_by_name(raw):
    answered(read_yaml_bytes, raw, "t.yaml")


@BUDGET
@given(plain_data)
@example({"": None})  # an empty key once gave a problem with an empty field name
@example(
    {
        "model": {"base": "x", "method": "qlora"},
        "data": {"train": []},
        "output": {"name": "t"},
        "cluster": {"sharding": "deepspeed_zero3"},
    }
)
@example({"model": {"base": "x"}, "data": {"train": [{"path": "x"}], "eval_split": math.nan}, "output": {"name": "t"}})
def test_any_plain_data_is_a_spec_or_a_named_error(data):
    answered(validate_spec, data, "data")


@BUDGET
@given(spec_shaped())
@example({"model": {"base": "x", "lora": None, "method": "full"}, "data": {"train": [{"path": "x"}]}, "output": {"name": "t"}})
@example({"model": {"base": "x"}, "data": {"train": [{"path": "x"}]}, "output": {"name": "t"}, "train": {"data": {}}})
@example({"model": {"base": "x"}, "data": {"train": [{"path": "x"}]}, "output": {"name": "t"}, "cluster": {"deepspeed": []}})
def test_spec_shaped_data_is_a_spec_or_a_named_error(data):
    result = answered(validate_spec, data, "data")
    if isinstance(result, JobSpec):
        assert result.model.base and result.output.name


@BUDGET
@given(plain_data | st.dictionaries(st.sampled_from(list(ServeArgs.model_fields)), plain_data, max_size=6))
@example({"model": "m", "adapters": {"a": "s3://b/x/a"}, "engine": "vllm", "adapter_root": 3})
@example({"": None})
@example({"model": "m", "adapters": {"a": 1}})  # a field without a description once left the fix ending in ": "
def test_any_serve_args_are_valid_or_a_named_error(args):
    answered(parse_args, args)
