"""Property test of the request schema (issue 17, item 3): any body gets a valid result or a named 4xx, never a 5xx.

Hypothesis builds chat bodies from the OpenAI fields with right, wrong and hostile values (wrong types, out-of-range
numbers, unknown keys, unpaired surrogates, path-like model names), with a fixed, derandomized example budget.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import KEYS

pytestmark = pytest.mark.slow

ODD_TEXT = st.sampled_from(["", "hello", "bad \ud800 text", "\udfff", "../../etc/passwd", "x" * 300, "{}", "\x00"])
TEXT = st.one_of(st.text(max_size=12), ODD_TEXT)
NUMBER = st.one_of(st.integers(-3, 10**10), st.floats(allow_nan=True, allow_infinity=True), TEXT, st.none(), st.booleans())
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["user", "assistant", "system", "developer", "tool"]), TEXT),
        "content": st.one_of(TEXT, st.none(), st.integers(), st.just([{"type": "text", "text": "hi"}])),
    },
    optional={"name": TEXT, "extra": NUMBER},
)
FIELDS = {
    "messages": st.one_of(st.lists(MESSAGE, min_size=1, max_size=3), st.lists(MESSAGE, max_size=0), TEXT, NUMBER),
    "max_tokens": NUMBER,
    "max_completion_tokens": NUMBER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "n": NUMBER,
    "seed": st.one_of(st.integers(-(2**70), 2**70), NUMBER),
    "logprobs": st.one_of(st.booleans(), NUMBER),
    "top_logprobs": NUMBER,
    "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER,
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=6), NUMBER),
    "stream": st.one_of(st.booleans(), NUMBER),
    "stream_options": st.one_of(st.just({"include_usage": True}), st.dictionaries(TEXT, NUMBER, max_size=2), NUMBER),
    "response_format": st.one_of(
        st.just({"type": "json_object"}), st.just({"type": "text"}), st.dictionaries(TEXT, TEXT, max_size=2), NUMBER
    ),
    "tool_choice": st.one_of(st.sampled_from(["none", "auto", "required"]), NUMBER),
    "user": TEXT,
    "max_token": NUMBER,
    "top_k": NUMBER,
}
BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["tiny", "alpha", "bravo", "zulu"]), TEXT, NUMBER)}, optional=FIELDS
)


def _post(url: str, body: dict) -> tuple[int, bytes]:
    data = json.dumps(body).encode()  # ensure_ascii: unpaired surrogates travel as \\ud800 escapes, as a client sends them
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEYS['admin']}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY)
def test_any_body_gets_a_result_or_a_named_4xx(tiny_app, body):
    for field in ("max_tokens", "max_completion_tokens"):  # keep valid requests short; huge ones must still get a 400
        if isinstance(body.get(field), int) and 0 < body[field] < 10**6:
            body[field] = min(body[field], 24)
    status, raw = _post(f"{tiny_app}/chat/completions", body)
    assert status < 500, (status, raw[:500], body)
    if status >= 400:
        error = json.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error
        assert "Traceback" not in error["message"] and "object at 0x" not in error["message"], error
    elif body.get("stream") is True:
        assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
    else:
        reply = json.loads(raw)
        assert reply["object"] == "chat.completion" and reply["choices"], reply
