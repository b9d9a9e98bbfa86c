"""A job's events in the order they happened, and `--follow`: print each new one until the job reaches a final status.

The API lists events newest first with `after` paging towards older ones (OpenAI's order), so each poll reads pages
until it reaches an event already printed, then prints the new ones oldest first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from jobs.cli._show import TERMINAL, event_line

PAGE = 100


def new_events(client, job_id: str, seen: str | None) -> list[Any]:
    """Events newer than the id `seen` (all when None), oldest first; event ids sort by time."""
    found, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=PAGE, **({"after": after} if after else {}))
        fresh = [e for e in page.data if seen is None or e.id > seen]
        found += fresh
        if not page.has_more or not page.data or len(fresh) < len(page.data):
            return list(reversed(found))
        after = page.data[-1].id


def follow(
    client,
    job_id: str,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    out: Callable[[str], None] | None = None,
) -> Any:
    """Print every event as it comes until the job is succeeded, failed or cancelled; returns the final job.

    The job's status is read after the events of each poll, so the events that led to the end are printed first.
    """
    write = out or (lambda line: print(line, flush=True))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = new_events(client, job_id, seen)
        for event in events:
            write(event_line(event))
        if events:
            seen = events[-1].id
        if job.status in TERMINAL:
            for event in new_events(client, job_id, seen):  # written between the two reads
                write(event_line(event))
            return job
        if deadline is not None and time.monotonic() > deadline:
            print(f"rayfit: stopped following {job_id} after {timeout_s:.0f} s; it is {job.status}.", file=sys.stderr)
            return job
        time.sleep(poll_s)
