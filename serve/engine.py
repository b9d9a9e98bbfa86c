"""The transformers + PEFT engine deployment: one base model, many LoRA adapters, mixed-adapter batches, token streaming.

Requests are batched with `@serve.batch` (dynamic batching): a batch forms from what arrived within
batch_wait_timeout_s, then decodes step by step, each step one forward pass for every row whatever its adapter.
We do not use `@serve.multiplexed` for adapters: Serve splits a batch by multiplexed model id (ray 2.60,
`_split_batch_by_model_id`), which would forbid exactly the mixed-adapter batches PEFT makes possible. Adapters
therefore load lazily into one PeftModel with our own LRU bound, and any replica can serve any adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from typing import Any, AsyncIterator

from ray import serve

from cluster.errors import UserError
from serve.adapters import adapter_dir, adapter_uri, resolve_model
from serve.args import parse_args
from serve.decode import Job, decode_steps
from serve.openai_protocol import ApiError

logger = logging.getLogger("ray.serve")
_END = object()


@serve.deployment(name="Engine")
class Engine:
    """Holds the model; `generate` streams one request's events: first {"prompt_tokens"} or {"error"}, then tokens."""

    def __init__(self, args: dict):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = parse_args(args)
        device = self.args.device if self.args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.args.dtype if self.args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        path = resolve_model(self.args.model)
        remote = self.args.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=remote)
        self.model.to(device).eval()
        self.peft = None  # the PeftModel wrapping self.model, created when the first adapter loads
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> URI, least recently used first
        self.in_use: Counter[str] = Counter()
        self.lock = asyncio.Lock()  # one forward pass or adapter (un)load at a time: PEFT mutates the modules
        self.eos = _eos_ids(self.model, self.tokenizer)
        self.stats = {"batches": 0, "largest_batch": 0, "mixed_adapter_batches": 0}
        self.max_len = self.args.max_model_len or getattr(self.model.config, "max_position_embeddings", 2048)
        self.batched = serve.batch(max_batch_size=self.args.max_batch_size, batch_wait_timeout_s=self.args.batch_wait_timeout_s,
                                   max_concurrent_batches=self.args.max_concurrent_batches)(self._decode_batch)
        logger.info("rayfit engine: %s on %s (%s), context %d", path, device, dtype, self.max_len)

    async def generate(self, request: dict) -> AsyncIterator[dict]:
        """Stream events for one request: {"prompt", "messages"|"prompt_text", "adapter", sampling fields}."""
        adapter = request.get("adapter")
        try:
            job = self._job(request)
            if adapter:
                await self._acquire(adapter)
        except ApiError as e:
            yield {"error": e.body()["error"], "status": e.status}
            return
        try:
            yield {"prompt_tokens": len(job.prompt_ids)}
            async for event in self.batched(job):
                yield event
        finally:
            if adapter:
                self.in_use[adapter] -= 1

    async def info(self) -> dict:
        """What this replica holds (context length, adapters in memory) and how it batched so far."""
        return {"max_model_len": self.max_len, "loaded_adapters": list(self.loaded), "device": str(self.model.device),
                **self.stats}

    def _job(self, request: dict) -> Job:
        if request.get("messages") is not None:
            if not self.tokenizer.chat_template:
                raise ApiError(400, "this model has no chat template. Use /v1/completions with a prompt.", param="messages")
            text = self.tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
        else:
            text = request["prompt_text"]
        ids = self.tokenizer(text, add_special_tokens=request.get("messages") is None)["input_ids"]
        room = self.max_len - len(ids)
        if room < 1:
            raise ApiError(400, f"the prompt has {len(ids)} tokens, but the context holds {self.max_len}. Shorten the prompt.",
                           param="messages" if request.get("messages") is not None else "prompt", code="context_length_exceeded")
        limit = request.get("max_tokens") or self.args.default_max_tokens
        return Job(prompt_ids=ids, max_tokens=min(limit, room), adapter=request.get("adapter"),
                   temperature=request.get("temperature", 1.0), top_p=request.get("top_p", 1.0),
                   stop=request.get("stop") or [], seed=request.get("seed"))

    async def _acquire(self, name: str) -> None:
        """Mark adapter `name` in use, loading it first if needed and evicting least recently used idle ones."""
        self.in_use[name] += 1
        try:
            if name in self.loaded:
                self.loaded.move_to_end(name)
                return
            async with self.lock:
                if name not in self.loaded:
                    await self._load(name)
        except BaseException:
            self.in_use[name] -= 1
            raise

    async def _load(self, name: str) -> None:
        from peft import PeftModel

        uri = await asyncio.to_thread(adapter_uri, self.args, name)
        if uri is None:
            raise ApiError(404, f"the model {name!r} does not exist.", code="model_not_found", param="model")
        try:
            path = await asyncio.to_thread(adapter_dir, uri)
        except (UserError, OSError) as e:
            raise ApiError(500, f"adapter {name!r} could not be loaded: {e}", type="server_error") from None
        if self.peft is None:
            self.peft = await asyncio.to_thread(PeftModel.from_pretrained, self.model, str(path), adapter_name=name)
            self.peft.eval()
        else:
            await asyncio.to_thread(self.peft.load_adapter, str(path), adapter_name=name)
        self.loaded[name] = uri
        logger.info("rayfit engine: loaded adapter %s from %s", name, uri)
        idle = [n for n in self.loaded if self.in_use[n] <= 0 and n != name]
        while len(self.loaded) > self.args.max_loaded_adapters and idle:
            victim = idle.pop(0)
            self.peft.delete_adapter(victim)
            del self.loaded[victim]
            logger.info("rayfit engine: evicted adapter %s (LRU, max_loaded_adapters=%d)", victim, self.args.max_loaded_adapters)

    def _current_model(self) -> tuple[Any, bool]:
        return (self.peft, True) if self.peft is not None else (self.model, False)

    async def _decode_batch(self, jobs: list[Job]) -> AsyncIterator[list[Any]]:
        """One batch: step the decoder in a thread (the event loop keeps queueing requests) and fan out events."""
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        self.stats["mixed_adapter_batches"] += len({job.adapter for job in jobs}) > 1
        steps = decode_steps(self._current_model, self.tokenizer, jobs, self.eos)
        while True:
            async with self.lock:
                events = await asyncio.to_thread(next, steps, _END)
            if events is _END:
                return
            # Serve's streaming batch protocol: StopIteration ends that request's stream.
            yield [StopIteration if e is None else e for e in events]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return ids
