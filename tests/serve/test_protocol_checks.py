"""Request checks rayfit adds in front of vLLM, against vLLM's own request schema (no engine): an unknown message role
and a tools request a deployment without a tool parser cannot answer get OpenAI-shaped 400s naming the param."""

from __future__ import annotations

import pytest

from serve.openai_protocol import ApiError, check_tool_choice, parse_request

TOOL = {"type": "function", "function": {"name": "get_permit", "parameters": {"type": "object", "properties": {}}}}


def _chat(**body):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return parse_request(ChatCompletionRequest, {"model": "tiny", **body})


def test_an_unknown_role_is_a_400_naming_the_message():
    ok = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert [m["role"] for m in _chat(messages=ok).messages] == ["system", "user"]
    with pytest.raises(ApiError) as e:
        _chat(messages=[*ok, {"role": "wizard", "content": "abracadabra"}])
    assert (e.value.status, e.value.param, e.value.code) == (400, "messages[2].role", "invalid_value")
    assert "'wizard'" in e.value.message and "user" in e.value.message
    assert e.value.body()["error"]["param"] == "messages[2].role"


@pytest.mark.parametrize("choice", [None, "auto", "required", {"type": "function", "function": {"name": "get_permit"}}], ids=str)
def test_tools_without_a_parser_get_rayfits_arg_not_vllms_flags(choice):
    body = _chat(messages=[{"role": "user", "content": "Permit?"}], tools=[TOOL], **({"tool_choice": choice} if choice else {}))
    with pytest.raises(ApiError) as e:
        check_tool_choice(body, None)
    assert (e.value.status, e.value.param) == (400, "tool_choice")
    assert "vllm.tool_call_parser" in e.value.message and "--" not in e.value.message, e.value.message
    assert ("'auto'" in e.value.message) == (choice in (None, "auto"))  # tools alone mean tool_choice auto
    check_tool_choice(body, "hermes")  # a deployment with a parser serves it
    check_tool_choice(_chat(messages=[{"role": "user", "content": "Permit?"}], tools=[TOOL], tool_choice="none"), None)
    check_tool_choice(_chat(messages=[{"role": "user", "content": "Permit?"}]), None)
