"""The Serve deployment: vLLM's AsyncLLM and its OpenAI serving classes, behind rayfit's thin tenancy layer.

One replica is what `vllm serve` is (an API process plus vLLM's engine-core process), so a token crosses no extra
Ray hop. Before a request reaches vLLM, rayfit adds only what vLLM's server lacks: API keys per tenant with
/v1/models filtered by key, adapters found by name (listed, or under adapter_root, local or object storage) and
loaded on first use, a bounded queue answered with 429 + Retry-After, refusal of unknown fields and unpaired
surrogates, and errors in OpenAI's shape without internal details.
"""

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.
import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from cluster.errors import UserError
from serve import openai_protocol as oai
from serve.adapters import adapter_dir, adapter_uri, resolve_model, root_names
from serve.args import parse_args
from serve.auth import Key, find_key, load_keys, may_use
from serve.console import router as console_router
from serve.openai_protocol import ApiError
from serve.service_routes import router

logger = logging.getLogger("ray.serve")
app = FastAPI(title="rayfit", description="OpenAI-compatible serving of a base model and its LoRA adapters (vLLM).")
app.include_router(router)  # the fine-tuning API (serve/service_routes.py): 404 unless the app has `storage`
app.include_router(console_router)  # the page at /console (serve/console.py): a client of the routes above


@app.exception_handler(ApiError)
async def _api_error(_: Request, e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


@app.exception_handler(Exception)
async def _server_error(_: Request, e: Exception) -> JSONResponse:
    logger.exception("rayfit: request failed")  # the details stay in the log: reprs, paths and ids are not for clients
    return JSONResponse(
        oai.error_body("internal server error; the server log has the details.", type="server_error"), status_code=500
    )


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:  # UnicodeDecodeError included
        raise ApiError(400, "the request body is not valid JSON (UTF-8).") from None


async def _release(stream: AsyncIterator[str], done: Any) -> AsyncIterator[str]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        done()


# Everything the routes call is defined above the class: serve.ingress pickles the routes when the class is decorated.
@serve.deployment(name="OpenAIServer")
@serve.ingress(app)
class OpenAIServer:
    """One vLLM engine with its OpenAI front end; the base is asked for by its name, an adapter by its own."""

    async def __init__(self, args: dict):
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.openai.api_server import init_app_state
        from vllm.v1.engine.async_llm import AsyncLLM

        from serve.vllm_config import WORKER_EXTENSION, adapter_ranks, vllm_namespace

        self.args = parse_args(args)
        self.keys = load_keys(self.args.api_keys)
        self.base = self.args.base_name()
        model_path = await asyncio.to_thread(resolve_model, self.args.model)
        ranks = await asyncio.to_thread(adapter_ranks, self.args)
        namespace = vllm_namespace(self.args, model_path, ranks)
        self.engine = AsyncLLM.from_vllm_config(AsyncEngineArgs.from_cli_args(namespace).create_engine_config())
        if namespace.worker_extension_cls == WORKER_EXTENSION:
            changed = await self.engine.collective_rpc("rayfit_bypass_idle_lora")
            logger.info("rayfit: %d LoRA wrappers call their base layer in steps without adapters", sum(changed))
        self.state = State()
        await init_app_state(self.engine, self.state, namespace, supported_tasks=await self.engine.get_supported_tasks())
        self.capacity = self.args.max_ongoing_requests + self.args.max_queued_requests
        self.active = 0
        self.loading: dict[str, asyncio.Lock] = {}
        self.service = None
        if self.args.storage:
            from serve.service import check_binding
            from serve.service_jobs import FineTuneService
            from serve.service_routes import use_service

            check_binding(self.args)
            self.service = FineTuneService(self.args, self.keys, namespace.max_lora_rank)
            use_service(self.service)
            self.reconciler = asyncio.get_running_loop().create_task(self.service.reconcile_forever(self._preload))
        logger.info("rayfit: serving %s as %r with vLLM (LoRA ranks %s)", model_path, self.base, ranks or "none")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    @app.get("/health")
    async def health(self) -> dict:
        """Liveness for load balancers and KubeRay: the engine answers; no key needed."""
        await self.engine.check_health()
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        """The base and every adapter this key may use."""
        key = self._key(request)
        found = await asyncio.to_thread(root_names, self.args)
        cards = [oai.model_card(self.base, "rayfit")]
        cards += [oai.model_card(name, "rayfit", parent=self.base) for name in dict.fromkeys([*self.args.adapters, *found])]
        if self.service is not None:
            return {"object": "list", "data": [c for c in cards if may_use(key, c["id"])] + self.service.cards(key)}
        return {"object": "list", "data": [c for c in cards if may_use(key, c["id"])]}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        """Chat completion (vLLM's OpenAIServingChat), whole or streamed as server-sent events."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return await self._serve(request, ChatCompletionRequest, "openai_serving_chat", "create_chat_completion")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        """Text completion (vLLM's OpenAIServingCompletion), whole or streamed."""
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        return await self._serve(request, CompletionRequest, "openai_serving_completion", "create_completion")

    async def _serve(self, request: Request, schema: type, serving: str, method: str) -> Any:
        key = self._key(request)  # authentication comes before validation: no key, no hints about the schema
        if self.active >= self.capacity:
            raise ApiError(
                429,
                "the server is at capacity; retry after the delay in Retry-After.",
                type="rate_limit_error",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        streaming = False
        try:
            body = oai.parse_request(schema, await _body(request))
            oai.check_tool_choice(body, self.args.vllm.tool_call_parser)
            oai.default_max_tokens(body, self.args.default_max_tokens)
            body.model = await self._route(body.model or self.base, key)
            result = await self._call(getattr(self.state, serving), method, body, request)
            if hasattr(result, "error"):
                raise oai.from_vllm_error(result)
            if hasattr(result, "model_dump"):
                return JSONResponse(result.model_dump(exclude_none=False))
            streaming = True
            return StreamingResponse(_release(result, self._done), media_type="text/event-stream")
        finally:
            if not streaming:
                self._done()

    @staticmethod
    async def _call(serving: Any, method: str, body: Any, request: Request) -> Any:
        """vLLM's handler; what it raises (e.g. VLLMValidationError for temperature -1) becomes its ErrorResponse,
        with the status vLLM's own server would give."""
        try:
            return await getattr(serving, method)(body, request)
        except Exception as e:  # noqa: BLE001 - vLLM maps every exception type to a status below
            response = serving.create_error_response(e)
            if response.error.code >= 500:
                logger.exception("rayfit: vLLM failed on a request")
            return response

    def _done(self) -> None:
        self.active -= 1

    def _key(self, request: Request) -> Key | None:
        if not self.keys:
            return None
        key = find_key(self.keys, request.headers.get("authorization"))
        if key is None:
            raise ApiError(
                401,
                "missing or invalid API key. Send `Authorization: Bearer <key>`.",
                type="authentication_error",
                code="invalid_api_key",
            )
        return key

    async def _route(self, model: str, key: Key | None) -> str:
        """The model to run for `model` (an alias resolves to its target, once per request), loaded into vLLM if it is
        an adapter not loaded yet. 403 comes before 404, so a key learns nothing of models it may not use; a
        fine-tuned model of another tenant is a 404, like one that does not exist."""
        owned = await asyncio.to_thread(self.service.route, model, key) if self.service is not None else None
        if owned is not None:
            model = owned
        elif not may_use(key, model):
            raise ApiError(
                403,
                f"this API key may not use model {model!r}.",
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
        await self._loaded(model)
        return model

    async def _loaded(self, model: str) -> None:
        """Load adapter `model` into vLLM unless it is loaded (one load at a time per name)."""
        models = self.state.openai_serving_models
        if model == self.base or model in models.lora_requests:
            return
        async with self.loading.setdefault(model, asyncio.Lock()):
            if model not in models.lora_requests:
                await self._load(model)

    async def _preload(self, model: str) -> None:
        """A model just published by a job of the fine-tuning API, loaded before anyone asks for it."""
        try:
            await self._loaded(model)
        except ApiError as e:  # its first request gets the same answer; the log says why now
            logger.warning("rayfit: could not preload %s: %s", model, e.message)

    async def _load(self, name: str) -> None:
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        started = time.perf_counter()
        uri = await asyncio.to_thread(adapter_uri, self.args, name)
        if uri is None:
            raise ApiError(
                404,
                f"the model {name!r} does not exist. GET /v1/models lists the models served here.",
                param="model",
                code="model_not_found",
            )
        try:
            path = await asyncio.to_thread(adapter_dir, uri)
        except (UserError, OSError) as e:
            logger.error("rayfit: adapter %s at %s cannot be served: %s", name, uri, e)
            raise ApiError(
                422, f"the adapter {name!r} cannot be served; the server log says why.", param="model", code="adapter_invalid"
            ) from None
        # adapter_dir has checked `path` against its manifest: a tampered adapter never reaches vLLM.
        loaded = await self.state.openai_serving_models.load_lora_adapter(
            LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path)), base_model_name=self.base
        )
        if hasattr(loaded, "error"):
            logger.error("rayfit: vLLM refused adapter %s at %s: %s", name, path, loaded.error.message)
            raise ApiError(
                422,
                f"the adapter {name!r} cannot be served by this deployment (e.g. its rank is above "
                "max_lora_rank); the server log says why.",
                param="model",
                code="adapter_invalid",
            )
        logger.info("rayfit: loaded adapter %s from %s in %.2f s", name, uri, time.perf_counter() - started)
