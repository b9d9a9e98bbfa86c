"""The progress line of a batch generation: rows done, rows/s, tokens/s, elapsed and ETA, every few seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

PROGRESS_EVERY_S = 10.0


class Progress:
    """`[rayfit] generate 120/200 rows (60%) | 3.2 rows/s | 41 tok/s | 0:37 elapsed | ETA 0:25`, every few seconds.

    Rates count from the first answer, so an engine's start-up does not make the ETA of the rest wrong."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.say, self.done, self.tokens = total, say, 0, 0
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last = 0.0

    def tick(self, tokens: int) -> None:
        """Count one row; print a line every PROGRESS_EVERY_S seconds and at the end."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.done += 1
        self.tokens += tokens
        if now - self.last < PROGRESS_EVERY_S and self.done < self.total:
            return
        self.last, since = now, now - self.first
        rate = (self.done - 1) / since if since > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        self.say(
            f"[rayfit] generate {self.done}/{self.total} rows ({100 * self.done // max(self.total, 1)}%) | "
            f"{rate:.1f} rows/s | {self.tokens / since if since > 0 else 0:.0f} tok/s | "
            f"{duration(now - self.start)} elapsed | ETA {duration(eta)}"
        )
        sys.stdout.flush()


def duration(seconds: float) -> str:
    """m:ss or h:mm:ss."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
