"""The client side of rayfit's fine-tuning service: one official `openai.OpenAI` client from flags or the environment,
and the service's error answers as one `rayfit:` line.

A laptop needs only the endpoint and a key: `RAYFIT_BASE_URL` (e.g. http://127.0.0.1:8000/v1) and `RAYFIT_API_KEY`,
or `--endpoint URL --api-key-env NAME` (the key itself is read from that variable, so it never shows in a shell's
history or in `ps`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from cluster.errors import UserError

ENDPOINT_ENV = "RAYFIT_BASE_URL"
KEY_ENV = "RAYFIT_API_KEY"
DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"
NO_KEY = "none"  # an app without api_keys accepts any bearer token; the client insists on sending one


class ApiError(UserError):
    """An error answer of the service, shown as one line naming the parameter it is about."""


def add_endpoint_args(parser) -> None:
    """The `--endpoint` and `--api-key-env` flags every service command takes."""
    parser.add_argument(
        "--endpoint",
        help=f"the service's OpenAI base URL (default: ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--api-key-env",
        default=KEY_ENV,
        metavar="NAME",
        help=f"environment variable holding the API key (default: {KEY_ENV}; unset: no key, for an app without keys)",
    )


def endpoint(args) -> str:
    """The base URL the command talks to, without a trailing slash."""
    return (getattr(args, "endpoint", None) or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def connect(args):
    """An `openai.OpenAI` client for the service named by the flags or the environment."""
    from openai import OpenAI

    url = endpoint(args)
    if not url.startswith(("http://", "https://")):
        raise UserError(
            f"endpoint {url!r} is not an http(s) URL. Fix: pass --endpoint http://HOST:8000/v1 or set {ENDPOINT_ENV}."
        )
    key_env = getattr(args, "api_key_env", KEY_ENV)
    key = os.environ.get(key_env)
    if key_env != KEY_ENV and not key:
        raise UserError(f"--api-key-env {key_env}: that environment variable is not set. Fix: export {key_env}=<your key>.")
    return OpenAI(base_url=url, api_key=key or NO_KEY, max_retries=2, timeout=120)


def error_line(status: int | None, body: Any, fallback: str) -> str:
    """One line for an error answer: the parameter it names first, then the message and the status.

    `body` is the `error` object of an OpenAI-shaped answer (what the client keeps as `APIStatusError.body`).
    """
    err = body if isinstance(body, dict) else {}
    message = " ".join(str(err.get("message") or fallback).split())  # a multi-line message (bad rows) on one line
    where = f"param {err['param']}: " if err.get("param") else ""
    tags = ", ".join(str(t) for t in (status, err.get("code") or err.get("type")) if t)
    return f"{where}{message}" + (f" ({tags})" if tags else "")


def api_command(fn: Callable[[Any], int | None]) -> Callable[[Any], int | None]:
    """Wrap a command's body: the client's errors become one `rayfit:` line and a non-zero exit (cluster.errors)."""

    @functools.wraps(fn)
    def run(args) -> int | None:
        import openai

        try:
            return fn(args)
        except openai.APIStatusError as e:
            raise ApiError(error_line(e.status_code, e.body, e.message)) from None
        except openai.APIConnectionError as e:
            raise UserError(
                f"cannot reach the service at {endpoint(args)} ({e.message}). Fix: check that the app runs there "
                f"(serve run serve.app:build_app model=... storage=...), or pass --endpoint / set {ENDPOINT_ENV}."
            ) from None

    return run


def rayfit_route(client, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call one of rayfit's own routes (`/rayfit/...` under the base URL) with the client's auth and retries."""
    call = getattr(client, method)
    return call(path, cast_to=dict) if body is None else call(path, body=body, cast_to=dict)
