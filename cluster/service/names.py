"""Names the service hands out: published models `ft:<base>:<suffix>:<job-id>`, their checkpoints, tenants' aliases."""

from __future__ import annotations

import re

FT = "ft:"
CKPT = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>\d+)$")
SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def model_name(base: str, suffix: str, job_id: str) -> str:
    """The published name of a job's model."""
    return f"{FT}{base}:{suffix}:{job_id}"


def checkpoint_name(model: str, step: int) -> str:
    """The callable name of one checkpoint of a published model."""
    return f"{model}:ckpt-step-{step}"


def split(name: str) -> tuple[str, int | None] | None:
    """(model name, checkpoint step or None) for an `ft:` name, None for any other name."""
    if not name.startswith(FT):
        return None
    found = CKPT.match(name)
    return (found["model"], int(found["step"])) if found else (name, None)


def job_of(model: str) -> str:
    """The job id at the end of a published model name."""
    return model.rsplit(":", 1)[-1]


def suffix_problem(suffix: str) -> str | None:
    """Why `suffix` cannot be part of a model name, or None."""
    if len(suffix) > 64:
        return f"suffix is {len(suffix)} characters long; at most 64 are allowed."
    if not SUFFIX.match(suffix):
        return f"suffix {suffix!r} may hold only letters, digits, '-' and '_' (no '/', '.', ':' or spaces)."
    return None


def record_key(name: str) -> str:
    """The file name a model record is stored under (':' is kept: valid on POSIX and object stores)."""
    return name.replace("/", "_")
