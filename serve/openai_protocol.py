"""The OpenAI wire format where rayfit touches it: the JSON error shape, model cards, and the checks vLLM leaves to us.

The request schemas themselves are vLLM's (`ChatCompletionRequest`, `CompletionRequest`): every OpenAI parameter
vLLM serves passes through unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

# The message roles of OpenAI's chat API (`function` is its deprecated predecessor of `tool`).
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ApiError(Exception):
    """An error the API returns as OpenAI's `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI clients parse into their exception types."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_card(name: str, owned_by: str, parent: str | None = None) -> dict:
    """One entry of GET /v1/models."""
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by, "parent": parent}


def parse_request(schema: type[BaseModel], data: Any) -> Any:
    """`data` (parsed JSON) validated against vLLM's request `schema`; ApiError(400) naming the parameter otherwise.

    vLLM accepts unknown fields with a log line; we refuse them, since a misspelt `max_token` silently ignored is a
    worse answer than a 400. Unpaired surrogates (valid JSON escapes, invalid text) are refused before the tokenizer
    meets them.
    """
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}.")
    known = {name for name, field in schema.model_fields.items()} | {
        field.alias for field in schema.model_fields.values() if field.alias
    }
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}.", param=unknown[0], code="unknown_parameter")
    where = _bad_text(data)
    if where is not None:
        raise ApiError(400, f"{where or 'body'} holds an unpaired UTF-16 surrogate, which is not text.", param=where or None)
    messages = data.get("messages")
    if "messages" in data and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
        raise ApiError(400, "invalid request: messages must be a list of message objects.", param="messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        role = message.get("role")
        if isinstance(role, str) and role not in ROLES:  # vLLM renders any role string into the prompt
            raise ApiError(
                400,
                f"invalid value {role!r} for messages[{i}].role; expected one of: {', '.join(ROLES)}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_input=False, include_url=False)
        param = ".".join(str(x) for x in errors[0]["loc"]) or None
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in errors[:5])
        raise ApiError(400, f"invalid request: {problems}", param=param) from None
    except Exception as e:  # noqa: BLE001 - validation sees only the body, so whatever fails is the body's fault
        from vllm.exceptions import VLLMClientError

        if isinstance(e, VLLMClientError):  # vLLM's own rule, e.g. stream_options without stream
            raise ApiError(400, f"invalid request: {e}", param=getattr(e, "parameter", None)) from None
        # vLLM's before-validators assume the right shapes and fail with TypeError and the like on others
        raise ApiError(400, f"invalid request: a field has the wrong type or shape ({type(e).__name__}).") from None


def default_max_tokens(body: Any, default: int) -> None:
    """A chat request that gives neither max_tokens nor max_completion_tokens gets the deployment's default; one that
    gives either keeps it. (vLLM's own knob, generation config `max_new_tokens`, also caps every request at that
    value.) /v1/completions keeps OpenAI's default of 16, which its schema already sets."""
    if getattr(body, "max_tokens", 0) is None and getattr(body, "max_completion_tokens", None) is None:
        body.max_tokens = default


def check_tool_choice(body: Any, tool_call_parser: str | None) -> None:
    """Refuse a tools request this deployment cannot parse, with advice a rayfit user can act on (vLLM's own names
    its CLI flags, which a Serve application does not take)."""
    choice = getattr(body, "tool_choice", None)
    if tool_call_parser is not None or not getattr(body, "tools", None) or choice in (None, "none"):
        return
    what = f"tool_choice {choice!r}" if isinstance(choice, str) else "a named tool_choice"
    raise ApiError(
        400,
        f"{what} needs a tool call parser, and this deployment has none. Fix: set the serve arg "
        "vllm.tool_call_parser to the parser of the model's tool format (e.g. hermes, llama3_json), or send "
        'tool_choice "none".',
        param="tool_choice",
        code="tool_choice_unsupported",
    )


def _bad_text(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) that cannot be encoded as UTF-8, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _bad_text(key) is not None:
            return inner
        found = _bad_text(item, inner)
        if found is not None:
            return found
    return None


def from_vllm_error(error: Any) -> ApiError:
    """vLLM's ErrorResponse as our ApiError: its status, and its message unless it is a server error (those can
    carry internal details, so the client gets a plain sentence and the log gets the rest)."""
    status = int(error.error.code) if str(error.error.code).isdigit() else 500
    if status >= 500:
        return ApiError(status, "the engine failed on this request; the server log has the details.", type="server_error")
    return ApiError(status, error.error.message, param=error.error.param, code="model_not_found" if status == 404 else None)
