"""The OpenAI API end to end: the official `openai` client against a local Serve app (tiny model + SmolLM2)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.serve.conftest import KEYS, add_to_root, client
from tests.serve.lora_fixtures import ANSWERS, QUESTION

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": QUESTION}]


def _answer(url: str, model: str, key: str = KEYS["admin"], **kw) -> str:
    reply = client(url, key).chat.completions.create(model=model, messages=ASK, temperature=0, **kw)
    return reply.choices[0].message.content


def _http(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    """A raw request, for bodies the typed client refuses to send; returns (status, JSON body)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _engine_info(app: str) -> dict:
    from ray import serve

    return serve.get_deployment_handle("Engine", app_name=app).info.remote().result()


# --- the embedded model ---------------------------------------------------------------------------------------------

def test_smollm2_chat_stream_models_and_completions(smol_app):
    c = client(smol_app)
    assert [m.id for m in c.models.list().data] == ["smollm2-135m-instruct"]
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    whole = c.chat.completions.create(model="smollm2-135m-instruct", messages=ask, temperature=0, max_tokens=12)
    assert whole.choices[0].message.content.startswith("The capital of France is Paris")
    assert whole.object == "chat.completion" and whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(c.chat.completions.create(model="smollm2-135m-instruct", messages=ask, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) >= 5, "streaming must send the answer token by token, not in one piece"
    assert "".join(pieces) == whole.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    text = c.completions.create(model="smollm2-135m-instruct", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert text.object == "text_completion" and "Paris" in text.choices[0].text
    assert text.usage.completion_tokens == 4 and text.choices[0].finish_reason == "length"


# --- adapters on the tiny model -------------------------------------------------------------------------------------

def test_each_adapter_gives_its_own_answer_and_the_base_differs(tiny_app):
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]
    assert _answer(tiny_app, "bravo") == ANSWERS["bravo"]
    base = _answer(tiny_app, "tiny", max_tokens=8)
    assert base not in ANSWERS.values() and base != ""


def test_different_adapters_share_one_batch(tiny_app):
    before = _engine_info("tiny")
    models = ["alpha", "bravo", "tiny"] * 4
    with ThreadPoolExecutor(len(models)) as pool:
        answers = list(pool.map(lambda m: _answer(tiny_app, m, max_tokens=12), models))
    base = _answer(tiny_app, "tiny", max_tokens=12)
    assert answers == [ANSWERS["alpha"], ANSWERS["bravo"], base] * 4
    after = _engine_info("tiny")
    assert after["mixed_adapter_batches"] > before["mixed_adapter_batches"], after


def test_streaming_adapter_answer_token_by_token(tiny_app):
    stream = client(tiny_app, KEYS["admin"]).chat.completions.create(model="bravo", messages=ASK, temperature=0, stream=True)
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == ANSWERS["bravo"] and len(pieces) >= 3


def test_sampling_seed_stop_and_max_tokens(tiny_app):
    c = client(tiny_app, KEYS["admin"])
    seeded = [c.chat.completions.create(model="tiny", messages=ASK, temperature=1.0, top_p=0.9, seed=7, max_tokens=10)
              .choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = c.chat.completions.create(model="alpha", messages=ASK, temperature=0, stop=[" permit"])
    assert stopped.choices[0].message.content == "A building" and stopped.choices[0].finish_reason == "stop"
    short = c.chat.completions.create(model="alpha", messages=ASK, temperature=0, max_tokens=2)
    assert short.usage.completion_tokens == 2 and short.choices[0].finish_reason == "length"


def test_adapter_added_after_deployment_is_served_and_lru_bounded(tiny_app, lora_set):
    c = client(tiny_app, KEYS["admin"])
    assert "charlie" not in [m.id for m in c.models.list().data]
    add_to_root(lora_set, lora_set["bravo"], "charlie")  # a new adapter lands in storage; no restart
    assert "charlie" in [m.id for m in c.models.list().data]
    assert _answer(tiny_app, "charlie") == ANSWERS["bravo"]
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]
    loaded = _engine_info("tiny")["loaded_adapters"]
    assert len(loaded) == 2 and loaded[-1] == "alpha", loaded  # max_loaded_adapters=2: the least recently used left


def test_32_concurrent_requests_all_succeed(tiny_app):
    models = ["alpha", "bravo"] * 16
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda m: _answer(tiny_app, m), models))
    assert answers == [ANSWERS[m] for m in models]


# --- auth and errors ------------------------------------------------------------------------------------------------

def test_keys_limit_models_and_hide_the_others(tiny_app):
    ids = lambda key: sorted(m.id for m in client(tiny_app, key).models.list().data)  # noqa: E731
    assert ids(KEYS["tenant_a"]) == ["alpha", "tiny"]
    assert ids(KEYS["tenant_b"]) == ["bravo"]
    assert {"alpha", "bravo", "tiny"} <= set(ids(KEYS["admin"]))
    assert _answer(tiny_app, "alpha", KEYS["tenant_a"]) == ANSWERS["alpha"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        _answer(tiny_app, "bravo", KEYS["tenant_a"])
    assert e.value.status_code == 403 and "may not use model 'bravo'" in e.value.message
    for key in (None, "sk-wrong"):
        with pytest.raises(openai.AuthenticationError) as e:
            _answer(tiny_app, "alpha", key)
        assert e.value.body["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "alpha"}, 400, "messages"),
    ({"model": "alpha", "messages": "hello"}, 400, "messages"),
    ({"model": "alpha", "messages": ASK, "temperature": "hot"}, 400, "temperature"),
    ({"model": "alpha", "messages": ASK, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "alpha", "messages": ASK, "max_token": 5}, 400, "max_token"),
    ({"model": "no-such-model", "messages": ASK}, 404, "does not exist"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(tiny_app, body, status, needle):
    code, reply = _http(f"{tiny_app}/chat/completions", body, KEYS["admin"])
    assert code == status, reply
    error = reply["error"]
    assert needle in error["message"] and error["type"] and set(error) == {"message", "type", "param", "code"}
    assert _answer(tiny_app, "alpha") == ANSWERS["alpha"]


def test_openai_client_raises_typed_errors(tiny_app):
    c = client(tiny_app, KEYS["admin"])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="alpha", messages=ASK, max_tokens=0)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="zulu", messages=ASK)
    assert e.value.body["code"] == "model_not_found"
    assert _http(tiny_app.removesuffix("/v1") + "/health") == (200, {"status": "ok"})


def test_overload_gets_503_in_openai_shape_and_recovers(serve_port, lora_set):
    from ray import serve

    from serve.app import build_app

    args = {"model": str(lora_set["base"]), "model_name": "tiny", "num_cpus": 0, "ingress_num_cpus": 0,
            "max_batch_size": 1, "max_concurrent_batches": 1, "max_ongoing_requests": 1, "max_queued_requests": 1}
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    url = f"http://127.0.0.1:{serve_port}/tight/v1"
    body = {"model": "tiny", "messages": ASK, "max_tokens": 48, "temperature": 0}
    try:
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: _http(f"{url}/chat/completions", body), range(16)))
        codes = sorted(code for code, _ in replies)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
        rejected = next(reply for code, reply in replies if code == 503)
        assert rejected["error"]["code"] == "overloaded" and rejected["error"]["type"] == "server_error"
        assert _http(f"{url}/chat/completions", body)[0] == 200
    finally:
        serve.delete("tight")
