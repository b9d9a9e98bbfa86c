"""How the service commands print what the API answers: aligned tables, one line per event, a progress line for
`metrics` events, and `--json` for machines (the API's own objects, unchanged)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


def plain(obj: Any) -> Any:
    """An API object (the client's pydantic models, or a dict) as plain JSON data, extra fields included."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_unset=False)
    if isinstance(obj, list):
        return [plain(o) for o in obj]
    return obj


def as_json(obj: Any) -> str:
    """What `--json` prints."""
    return json.dumps(plain(obj), indent=2, default=str)


def when(ts: int | float | None) -> str:
    """A Unix time as `2026-12-03 16:51:17` (UTC), or `-`."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """`1:05`, `1:02:03`, or `-`."""
    if seconds is None or seconds < 0:
        return "-"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def size(n: int | None) -> str:
    """Bytes as a person reads them: `812 B`, `93.4 KiB`, `1.2 GiB`."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart; `(none)` when there are no rows."""
    if not rows:
        return "(none)"
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def files_table(files: list[Any]) -> str:
    """`rayfit files list`."""
    rows = [[f.id, f.filename, size(f.bytes), f.purpose, f.status, when(f.created_at)] for f in files]
    return table(["ID", "FILENAME", "SIZE", "PURPOSE", "STATUS", "CREATED"], rows)


def jobs_table(jobs: list[Any]) -> str:
    """`rayfit jobs list`."""
    rows = [[j.id, j.status, j.model, j.fine_tuned_model, when(j.created_at), when(j.finished_at)] for j in jobs]
    return table(["ID", "STATUS", "MODEL", "FINE-TUNED MODEL", "CREATED", "FINISHED"], rows)


HYPER_ORDER = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")


def hyperparameters(hyper: dict[str, Any]) -> str:
    """`n_epochs=3, batch_size=8, learning_rate_multiplier=1.0` (OpenAI's order, then any others)."""
    keys = [k for k in HYPER_ORDER if k in hyper] + sorted(k for k in hyper if k not in HYPER_ORDER)
    return ", ".join(f"{k}={hyper[k]}" for k in keys if hyper[k] is not None)


def job_details(job: Any) -> str:
    """`rayfit jobs get`: one field a line, with the resolved hyperparameters and the error if any."""
    data = plain(job)
    method = data.get("method") or {}
    kind = method.get("type") or "supervised"
    hyper = (method.get(kind) or {}).get("hyperparameters") or data.get("hyperparameters") or {}
    lines = [
        ("id", data["id"]),
        ("status", data["status"]),
        ("model", data["model"]),
        ("fine_tuned_model", data.get("fine_tuned_model")),
        ("method", kind),
        ("hyperparameters", hyperparameters(hyper) or None),
        ("training_file", data.get("training_file")),
        ("validation_file", data.get("validation_file")),
        ("suffix", data.get("suffix")),
        ("seed", data.get("seed")),
        ("trained_tokens", data.get("trained_tokens")),
        ("created_at", when(data.get("created_at"))),
        ("estimated_finish", when(data.get("estimated_finish")) if data.get("estimated_finish") else None),
        ("finished_at", when(data.get("finished_at")) if data.get("finished_at") else None),
        ("result_files", ", ".join(data.get("result_files") or []) or None),
    ]
    if data.get("metadata"):
        lines.append(("metadata", ", ".join(f"{k}={v}" for k, v in data["metadata"].items())))
    error = data.get("error") or {}
    if error.get("message"):
        where = f" (param {error['param']})" if error.get("param") else ""
        lines.append(("error", f"{error.get('code')}: {error['message']}{where}"))
    extra = data.get("rayfit") or {}
    for key in ("ray_job_id", "init_from", "run"):
        if extra.get(key):
            lines.append((f"rayfit.{key}", extra[key]))
    return "\n".join(f"{k:<17} {v}" for k, v in lines if v is not None)


def progress(data: dict[str, Any]) -> str:
    """A `metrics` event's data as `step 30/60 (50%) | loss 3.1169 | valid_loss 2.9012 | lr 5.5e-04 | 123 tok/s |
    ETA 1:57`."""
    step, total = data.get("step"), data.get("total_steps")
    parts = [f"step {step}/{total}" + (f" ({100 * step // total}%)" if step is not None and total else "")]
    for key, label in (("train_loss", "loss"), ("valid_loss", "valid_loss")):
        if data.get(key) is not None:
            parts.append(f"{label} {data[key]:.4f}")
    if data.get("learning_rate") is not None:
        parts.append(f"lr {data['learning_rate']:.1e}")
    if data.get("tokens_per_s"):
        parts.append(f"{data['tokens_per_s']:,.0f} tok/s")
    if data.get("eta_s") is not None:
        parts.append(f"ETA {duration(data['eta_s'])}")
    return " | ".join(parts)


def event_line(event: Any) -> str:
    """One event: its time, then the progress line of a `metrics` event or the message of any other."""
    data = plain(event)
    stamp = when(data.get("created_at"))[11:]  # the time of day; events of one job share a date
    if data.get("type") == "metrics" and isinstance(data.get("data"), dict):
        return f"{stamp}  {progress(data['data'])}"
    level = "" if data.get("level") in (None, "info") else f"[{data['level']}] "
    message = str(data.get("message", "")).replace("\n", "\n" + " " * (len(stamp) + 2))  # the plan is a block
    return f"{stamp}  {level}{message}"


def models_table(models: list[Any]) -> str:
    """`rayfit models`: every model the key may call, with the base each fine-tuned one came from."""
    rows = [[m.id, getattr(m, "parent", None) or plain(m).get("parent"), m.owned_by, when(m.created)] for m in models]
    return table(["MODEL", "PARENT", "OWNED BY", "CREATED"], rows)


def aliases_table(aliases: list[dict[str, Any]]) -> str:
    """`rayfit aliases list`."""
    rows = [[a["name"], a["model"], a.get("previous"), when(a.get("updated_at"))] for a in aliases]
    return table(["ALIAS", "MODEL", "PREVIOUS", "UPDATED"], rows)


def checkpoints_table(checkpoints: list[Any]) -> str:
    """`rayfit jobs checkpoints`: step, losses and the callable checkpoint name."""
    rows = []
    for c in checkpoints:
        m = plain(c).get("metrics") or {}
        train, valid = (f"{m[k]:.4f}" if m.get(k) is not None else None for k in ("train_loss", "valid_loss"))
        rows.append([c.step_number, train, valid, c.fine_tuned_model_checkpoint])
    return table(["STEP", "TRAIN LOSS", "VALID LOSS", "MODEL"], rows)
