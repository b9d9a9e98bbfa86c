"""Answers from an OpenAI-compatible endpoint (a distillation teacher), as a Ray Data stage of rayfit's own.

Not ray.data.llm's HttpRequestProcessorConfig, because of how its stage (Ray 2.60) fails: a request that still fails
after its retries raises and stops the whole dataset instead of one row, a 401's error body is passed on as if it
were an answer, requests have aiohttp's 5-minute default timeout, and a batch's requests go out one after another.
Here each row is one chat completion through the official `openai` client, with its own timeout and retries; a
batch's rows are in flight together; a row that fails comes back with its reason, like a row vLLM refuses.

The API key is read from the environment by the driver (`teacher.api_key_env`) and handed to the actors in memory:
it never appears in the settings, the job key, the output or the logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from cluster.errors import UserError
from cluster.generation.engine import CARRIED
from cluster.generation.settings import GenerateSettings

AUTH_STATUSES = (401, 403)
REFUSED = "refused by the teacher endpoint"  # starts the error of a row whose request was not authorised


def api_key(settings: GenerateSettings) -> str | None:
    """The teacher's API key from the environment variable the settings name; a UserError when it is not set."""
    import os

    name = settings.teacher.api_key_env
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise UserError(
            f"teacher.api_key_env: the environment variable {name} is not set. Fix: export {name}=<the endpoint's "
            "API key> (in the cluster's environment or a Kubernetes Secret for `ray job submit`), or set "
            "teacher.api_key_env: null for an endpoint that takes no key."
        )
    return key


def answer_http(settings: GenerateSettings, requests: list[dict], key: str | None) -> Iterator[dict]:
    """Answered rows for `requests` (cluster.generation.pipeline.request), as they finish, in the engine's row shape."""
    import ray.data

    teacher = settings.teacher
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(requests).map_batches(
        _Teacher,
        fn_constructor_kwargs={
            "url": teacher.url,
            "key": key,
            "model": settings.model,
            "timeout_s": teacher.timeout_s,
            "max_retries": teacher.max_retries,
            "concurrency": teacher.concurrency,
        },
        batch_size=settings.batch_size,
        batch_format="pyarrow",  # nulls stay nulls (pandas would turn a failed row's token count into NaN)
        compute=ray.data.ActorPoolStrategy(size=settings.replicas),
        num_cpus=0.25,  # waiting on the network: a share of a CPU
    )
    yield from ds.iter_rows()


class _Teacher:
    """A Ray Data actor: one OpenAI client, the rows of a batch answered concurrently."""

    def __init__(self, url: str, key: str | None, model: str, timeout_s: float, max_retries: int, concurrency: int):
        from openai import OpenAI

        self.client = OpenAI(base_url=url, api_key=key or "none", timeout=timeout_s, max_retries=max_retries)
        self.model, self.timeout_s, self.tries = model, timeout_s, max_retries + 1
        self.pool = ThreadPoolExecutor(concurrency)

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(list(self.pool.map(self.one, batch.to_pylist())))

    def one(self, row: dict) -> dict:
        """One row's chat completion, or its failure with the reason."""
        import openai

        messages = json.loads(row["messages_json"])
        out = {k: row[k] for k in CARRIED} | {"prompt": row["messages_json"], "prompt_tokens": None, "output_tokens": 0}
        sampling = json.loads(row["sampling_json"])
        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages, **_openai_sampling(sampling))
        except openai.APITimeoutError:
            return out | _failed(f"the teacher endpoint did not answer within {self.timeout_s:g} s ({self.tries} tries)")
        except openai.APIStatusError as e:
            reason = f"{REFUSED}: {e.status_code} {_message(e)}" if e.status_code in AUTH_STATUSES else None
            return out | _failed(reason or f"the teacher endpoint answered {e.status_code}: {_message(e)}")
        except openai.APIConnectionError as e:
            return out | _failed(f"could not reach the teacher endpoint ({type(e.__cause__ or e).__name__})")
        if not reply.choices:
            return out | _failed("the teacher endpoint answered without a choice")
        choice, usage = reply.choices[0], reply.usage
        return out | {
            "output": choice.message.content or "",
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else 0,
            "finish_reason": "length" if choice.finish_reason == "length" else "stop",
            "error": None,
        }


def _openai_sampling(params: dict) -> dict:
    """vLLM sampling params as the OpenAI API names them; top_k, repetition_penalty and ignore_eos (when set) go as
    vLLM's extra body (an OpenAI endpoint that is not vLLM may refuse them)."""
    out = {k: params[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop") if k in params}
    extra = {k: params[k] for k in ("top_k", "repetition_penalty", "ignore_eos") if params.get(k) not in (None, 0, 1.0, False)}
    return out | ({"extra_body": extra} if extra else {})


def _failed(reason: str) -> dict:
    return {"output": None, "finish_reason": "error", "error": reason}


def _message(e) -> str:
    """The error's own message (an OpenAI error body's `message`), short."""
    body = e.body if isinstance(e.body, dict) else {}
    detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return str(detail.get("message") or e.message)[:300]
