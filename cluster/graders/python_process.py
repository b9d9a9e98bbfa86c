"""A user's grade(sample, item) in a child process: each call bounded by a timeout, the child replaced when it hangs."""

from __future__ import annotations

import math
import multiprocessing
import os
import sys

from cluster.graders.base import GraderError

START_TIMEOUT_S = 60.0  # importing a user's module (and its imports) may take longer than one call


def _load(source: str | None, function: str | None, cwd: str):
    if source is not None:
        namespace: dict = {"__name__": "rayfit_grader"}
        exec(compile(source, "<grader source>", "exec"), namespace)
        return namespace["grade"]
    import importlib

    sys.path.insert(0, cwd)
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _serve(conn, source: str | None, function: str | None, cwd: str) -> None:
    """The child's loop: load grade once, then answer (sample, item) messages until None."""
    try:
        grade = _load(source, function, cwd)
    except BaseException as e:  # the parent names it; the child has nothing else to do
        conn.send(("error", f"could not be loaded ({_describe(e)})"))
        return
    conn.send(("ready", None))
    while (msg := conn.recv()) is not None:
        try:
            value = grade(*msg)
            score = float(value)
            conn.send(("ok", score) if math.isfinite(score) else ("error", f"returned {value!r}, not a finite number"))
        except BaseException as e:
            conn.send(("error", f"raised {_describe(e)}"))


class GraderProcess:
    """Calls grade(sample, item) in a child process; raises GraderError when it raises, returns junk or times out."""

    def __init__(self, source: str | None, function: str | None, timeout_s: float):
        self.source, self.function, self.timeout_s = source, function, timeout_s
        self._proc = self._conn = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.source, self.function, os.getcwd()), daemon=True)
        self._proc.start()
        child.close()
        self._receive(START_TIMEOUT_S, "to start")

    def _receive(self, timeout: float, doing: str):
        if not self._conn.poll(timeout):
            self.close()
            raise GraderError(f"took longer than {timeout:g} s {doing}")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self.close()
            raise GraderError(f"its process died {doing}") from None
        if kind == "error":
            if doing == "to start":
                self.close()
            raise GraderError(value)
        return value

    def __call__(self, sample: dict, item: dict) -> float:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((sample, item))
        return self._receive(self.timeout_s, "to grade")

    def close(self) -> None:
        """Stop the child process (it is started again on the next call)."""
        if self._proc is not None:
            if self._proc.pid is not None:  # a child that failed to start has nothing to stop
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None
