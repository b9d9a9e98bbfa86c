"""The OpenAI-compatible HTTP ingress: auth, validation, model routing, and SSE streaming over the engine's events."""

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.
import asyncio
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve import openai_protocol as oai
from serve.adapters import adapter_uri, root_names
from serve.args import parse_args
from serve.auth import Key, find_key, load_keys, may_use
from serve.openai_protocol import ApiError

app = FastAPI(title="rayfit", description="OpenAI-compatible serving of a base model and its LoRA adapters.")


@app.exception_handler(ApiError)
async def _api_error(_: Request, e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@app.exception_handler(Exception)
async def _server_error(_: Request, e: Exception) -> JSONResponse:
    return JSONResponse(oai.error_body(f"internal error: {type(e).__name__}: {e}", type="server_error"), status_code=500)


async def _parse(model: type[BaseModel], request: Request) -> Any:
    """The request body validated against `model`; 400 with every problem in OpenAI's shape otherwise."""
    try:
        data = await request.json()
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON.") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in errors)
        param = ".".join(str(x) for x in errors[0]["loc"]) or None
        raise ApiError(400, f"invalid request: {problems}", param=param) from None


async def _sse(events: AsyncIterator[dict], rid: str, model: str, prompt_tokens: int, chat: bool,
               include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: one chunk per decoded piece of text, the finish reason, optional usage, then [DONE]."""
    completion = 0
    if chat:
        yield oai.sse(oai.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
    try:
        async for event in events:
            completion = event["completion_tokens"]
            if event["text"] or event["finish_reason"]:
                if chat:
                    delta = {"content": event["text"]} if event["text"] else {}
                    yield oai.sse(oai.chat_chunk(rid, model, delta, event["finish_reason"]))
                else:
                    yield oai.sse(oai.completion_chunk(rid, model, event["text"], event["finish_reason"]))
    except Exception as e:  # the status line is already sent, so report the failure inside the stream
        yield oai.sse(oai.error_body(f"generation failed: {e}", type="server_error"))
    if include_usage:
        totals = oai.usage(prompt_tokens, completion)
        yield oai.sse(oai.chat_chunk(rid, model, {}, None, totals) if chat
                      else oai.completion_chunk(rid, model, "", None, totals))
    yield oai.sse("[DONE]")


# Everything the routes call is defined above the class: serve.ingress pickles the routes when the class is decorated.
@serve.deployment(name="OpenAIIngress")
@serve.ingress(app)
class OpenAIIngress:
    """Routes /v1/* to the engine; the base is asked for by its name, an adapter by its own."""

    def __init__(self, engine: DeploymentHandle, args: dict):
        self.args = parse_args(args)
        self.engine = engine.options(stream=True)
        self.keys = load_keys(self.args.api_keys)
        self.base = self.args.base_name()
        self.known: dict[str, str] = dict(self.args.adapters)  # adapters found so far, adapter_root ones included

    @app.get("/health")
    async def health(self) -> dict:
        """Liveness for load balancers and KubeRay; no key needed."""
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        """The base and every adapter this key may use."""
        key = self._key(request)
        found = await asyncio.to_thread(root_names, self.args)
        cards = [oai.model_card(self.base, "rayfit")]
        cards += [oai.model_card(name, "rayfit", parent=self.base) for name in [*self.args.adapters, *found]]
        return {"object": "list", "data": [c for c in cards if may_use(key, c["id"])]}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        """Chat completion, whole or streamed as server-sent events."""
        key = self._key(request)  # authentication comes before validation: no key, no hints about the schema
        body = await _parse(oai.ChatCompletionRequest, request)
        adapter = await self._route(body.model, key)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        return await self._respond(body, {"messages": messages, "adapter": adapter}, chat=True)

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        """Text completion of one prompt, whole or streamed."""
        key = self._key(request)
        body = await _parse(oai.CompletionRequest, request)
        adapter = await self._route(body.model, key)
        return await self._respond(body, {"prompt_text": body.prompt, "adapter": adapter}, chat=False)

    def _key(self, request: Request) -> Key | None:
        if not self.keys:
            return None
        key = find_key(self.keys, request.headers.get("authorization"))
        if key is None:
            raise ApiError(401, "missing or invalid API key. Send `Authorization: Bearer <key>`.",
                           type="authentication_error", code="invalid_api_key")
        return key

    async def _route(self, model: str, key: Key | None) -> str | None:
        """The adapter to use (None: the base); 403 before 404, so a key learns nothing of models it may not use."""
        if not may_use(key, model):
            raise ApiError(403, f"this API key may not use model {model!r}.", type="permission_error",
                           param="model", code="model_not_allowed")
        if model == self.base:
            return None
        if model not in self.known:
            uri = await asyncio.to_thread(adapter_uri, self.args, model)
            if uri is None:
                raise ApiError(404, f"the model {model!r} does not exist. GET /v1/models lists the models served here.",
                               param="model", code="model_not_found")
            self.known[model] = uri
        return model

    async def _respond(self, body: Any, payload: dict, chat: bool) -> Any:
        payload |= {"max_tokens": body.limit(), "temperature": body.temperature, "top_p": body.top_p,
                    "stop": body.stop, "seed": body.seed}
        events = self.engine.generate.remote(payload)
        try:
            first = await events.__anext__()
        except BackPressureError:
            raise ApiError(503, "the server is overloaded; retry later.", type="server_error", code="overloaded") from None
        if "error" in first:
            raise ApiError(first["status"], **first["error"])
        rid = oai.new_id("chatcmpl" if chat else "cmpl")
        if body.stream:
            stream = _sse(events, rid, body.model, first["prompt_tokens"], chat, body.include_usage())
            return StreamingResponse(stream, media_type="text/event-stream")
        text, finish, completion = [], "stop", 0
        async for event in events:
            text.append(event["text"])
            finish, completion = event["finish_reason"] or finish, event["completion_tokens"]
        build = oai.chat_response if chat else oai.completion_response
        return build(rid, body.model, "".join(text), finish, first["prompt_tokens"], completion)
