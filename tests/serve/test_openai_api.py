"""The OpenAI API end to end: the official `openai` client against the vLLM engine in a local Serve app (tiny model)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.serve.conftest import KEYS, add_to_root, client
from tests.serve.lora_fixtures import ANSWERS, QUESTION

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": QUESTION}]
ADMIN = KEYS["admin"]


def _answer(url: str, model: str, key: str = ADMIN, **kw) -> str:
    reply = client(url, key).chat.completions.create(model=model, messages=ASK, temperature=0, **kw)
    return reply.choices[0].message.content


def _http(url: str, body: bytes | dict | None = None, key: str | None = ADMIN, timeout: float = 120) -> tuple[int, dict, dict]:
    """A raw request, for bodies the typed client refuses to send; returns (status, JSON body, headers)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
            return r.status, json.load(r), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.load(e), {k.lower(): v for k, v in e.headers.items()}


# --- the OpenAI surface ---------------------------------------------------------------------------------------------


def test_chat_stream_and_completions(tiny_app):
    c = client(tiny_app, ADMIN)
    whole = c.chat.completions.create(model="alpha", messages=ASK, temperature=0)
    assert whole.choices[0].message.content == ANSWERS["alpha"] and whole.choices[0].finish_reason == "stop"
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        c.chat.completions.create(model="alpha", messages=ASK, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == ANSWERS["alpha"] and len(pieces) >= 3, "streaming sends the answer token by token"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    text = c.completions.create(model="tiny", prompt="A building permit", max_tokens=4, temperature=0)
    assert text.object == "text_completion" and text.usage.completion_tokens == 4
    assert text.choices[0].finish_reason == "length"


def test_n_logprobs_seed_stop_and_penalties(tiny_app):
    c = client(tiny_app, ADMIN)
    two = c.chat.completions.create(model="tiny", messages=ASK, n=2, temperature=1.0, max_tokens=8, seed=3)
    assert [ch.index for ch in two.choices] == [0, 1]
    again = c.chat.completions.create(model="tiny", messages=ASK, n=2, temperature=1.0, max_tokens=8, seed=3)
    assert [ch.message.content for ch in two.choices] == [ch.message.content for ch in again.choices]

    scored = c.chat.completions.create(model="alpha", messages=ASK, temperature=0, logprobs=True, top_logprobs=3)
    tokens = scored.choices[0].logprobs.content
    assert [t.token for t in tokens][-1] == "<|im_end|>" and "".join(t.token for t in tokens[:-1]) == ANSWERS["alpha"]
    assert len(tokens) == scored.usage.completion_tokens  # one entry per generated token, the end of turn included
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in tokens)
    assert tokens[0].logprob == max(t.logprob for t in tokens[0].top_logprobs)  # greedy picks the most likely

    stopped = c.chat.completions.create(model="alpha", messages=ASK, temperature=0, stop=[" permit"])
    assert stopped.choices[0].message.content == "A building" and stopped.choices[0].finish_reason == "stop"

    plain = c.completions.create(model="tiny", prompt="The building", max_tokens=24, temperature=0)
    penalised = c.completions.create(
        model="tiny", prompt="The building", max_tokens=24, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    # Greedy decoding is deterministic, so a different text means the penalties reached vLLM's sampler.
    assert penalised.choices[0].text != plain.choices[0].text, plain.choices[0].text


def test_default_max_tokens_fills_in_only_when_a_request_gives_none(tiny_app):
    """default_max_tokens (16 here) is the length of a chat request that names none; a request's own limit, larger
    or smaller, is what it gets."""
    c = client(tiny_app, ADMIN)
    common = {"model": "tiny", "messages": ASK, "temperature": 0, "extra_body": {"ignore_eos": True}}
    assert c.chat.completions.create(**common).usage.completion_tokens == 16
    assert c.chat.completions.create(**common, max_tokens=40).usage.completion_tokens == 40
    assert c.chat.completions.create(**common, max_completion_tokens=24).usage.completion_tokens == 24
    assert c.chat.completions.create(**common, max_tokens=5).usage.completion_tokens == 5
    text = c.completions.create(model="tiny", prompt="A building", max_tokens=40, temperature=0, extra_body={"ignore_eos": True})
    assert text.usage.completion_tokens == 40


# --- adapters -------------------------------------------------------------------------------------------------------


def test_two_adapters_answer_differently_through_one_deployment(tiny_app):
    """The base answers the same in batches with adapters (vLLM's LoRA ops, no adapter for its tokens) as alone (a
    batch without adapters, which rayfit runs on the base layers without their LoRA wrappers on CPU:
    serve/vllm_worker.py)."""
    models = ["alpha", "bravo", "tiny"] * 4
    with ThreadPoolExecutor(len(models)) as pool:  # concurrent: vLLM batches different adapters together
        answers = list(pool.map(lambda m: _answer(tiny_app, m, max_tokens=12), models))
    base = _answer(tiny_app, "tiny", max_tokens=12)
    assert answers == [ANSWERS["alpha"], ANSWERS["bravo"], base] * 4
    assert base not in ANSWERS.values()


def test_adapter_added_after_deployment_is_served(tiny_app, lora_set):
    c = client(tiny_app, ADMIN)
    assert "charlie" not in [m.id for m in c.models.list().data]
    add_to_root(lora_set, lora_set["bravo"], "charlie")  # a new adapter lands in storage; no restart
    assert "charlie" in [m.id for m in c.models.list().data]
    assert _answer(tiny_app, "charlie") == ANSWERS["bravo"]


# --- auth, bad requests, load ---------------------------------------------------------------------------------------


def test_keys_limit_models_and_hide_the_others(tiny_app):
    ids = lambda key: sorted(m.id for m in client(tiny_app, key).models.list().data)  # noqa: E731
    assert ids(KEYS["tenant_a"]) == ["alpha", "tiny"]
    assert ids(KEYS["tenant_b"]) == ["bravo"]
    assert {"alpha", "bravo", "tiny"} <= set(ids(ADMIN))
    assert _answer(tiny_app, "alpha", KEYS["tenant_a"]) == ANSWERS["alpha"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        _answer(tiny_app, "bravo", KEYS["tenant_a"])
    assert "may not use model 'bravo'" in e.value.message
    with pytest.raises(openai.AuthenticationError) as e:
        _answer(tiny_app, "alpha", "sk-wrong")
    assert e.value.body["code"] == "invalid_api_key"


TOO_LONG = "permit " * 600  # over the 512-token context
BAD = {
    "invalid JSON": (b'{"model": "alpha", "messages": [', ADMIN, 400, None),
    "wrong type": ({"model": "alpha", "messages": "hello"}, ADMIN, 400, "messages"),
    "temperature type": ({"model": "alpha", "messages": ASK, "temperature": "hot"}, ADMIN, 400, "temperature"),
    "max_tokens 0": ({"model": "alpha", "messages": ASK, "max_tokens": 0}, ADMIN, 400, "max_tokens"),
    "max_tokens 1e9": ({"model": "alpha", "messages": ASK, "max_tokens": 10**9}, ADMIN, 400, "max_tokens"),
    "temperature -1": ({"model": "alpha", "messages": ASK, "temperature": -1}, ADMIN, 400, "temperature"),
    "unknown model": ({"model": "zulu", "messages": ASK}, ADMIN, 404, "zulu"),
    "path-like model": ({"model": "../../etc/passwd", "messages": ASK}, ADMIN, 404, "passwd"),
    "prompt over context": ({"model": "alpha", "messages": [{"role": "user", "content": TOO_LONG}]}, ADMIN, 400, "context"),
    "unpaired surrogate": (
        b'{"model": "alpha", "messages": [{"role": "user", "content": "bad \\ud800 text"}]}',
        ADMIN,
        400,
        "surrogate",
    ),
    "unknown field": ({"model": "alpha", "messages": ASK, "max_token": 5}, ADMIN, 400, "max_token"),
    "no key": ({"model": "alpha", "messages": ASK}, None, 401, "API key"),
    "another tenant's adapter": ({"model": "bravo", "messages": ASK}, KEYS["tenant_a"], 403, "bravo"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_errors_fast_and_the_server_keeps_serving(tiny_app, case):
    body, key, status, needle = BAD[case]
    start = time.perf_counter()
    code, reply, _ = _http(f"{tiny_app}/chat/completions", body, key)
    took = time.perf_counter() - start
    assert code == status, reply
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"], error
    assert needle is None or needle in error["message"], error
    assert not any(s in error["message"] for s in ("Traceback", "object at 0x", "pid=", "ActorID")), error
    assert took < 1.0, f"{case}: {took:.2f} s"
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]


def test_64_concurrent_requests_all_succeed(tiny_app):
    models = ["alpha", "bravo"] * 32
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda m: _answer(tiny_app, m), models))
    assert answers == [ANSWERS[m] for m in models]


def test_over_capacity_gets_429_with_retry_after_and_recovers(tiny_app):
    body = {"model": "tiny", "messages": ASK, "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    with ThreadPoolExecutor(96) as pool:
        replies = list(pool.map(lambda _: _http(f"{tiny_app}/chat/completions", body), range(96)))
    codes = sorted(code for code, _, _ in replies)
    assert set(codes) == {200, 429} and codes.count(200) >= 64, codes
    _, rejected, headers = next(r for r in replies if r[0] == 429)
    assert rejected["error"]["code"] == "overloaded" and headers["retry-after"] == "1"
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]


def test_cancelled_streams_leave_it_healthy(tiny_app):
    def cancel_midway() -> int:
        stream = client(tiny_app, ADMIN).chat.completions.create(
            model="tiny", messages=ASK, max_tokens=400, temperature=0, stream=True, extra_body={"ignore_eos": True}
        )
        got = 0
        for _chunk in stream:
            got += 1
            if got == 5:
                stream.close()  # the client goes away mid-answer
                break
        return got

    threads = [threading.Thread(target=cancel_midway) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]
    assert _http(tiny_app.removesuffix("/v1") + "/health", key=None)[:2] == (200, {"status": "ok"})
