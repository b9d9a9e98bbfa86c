"""Two commits' tests on the same machine at the same time: a fresh clone of each (its own venv, made by `make
install` from pip's cache), then the same pytest selection run in one and the other, alternately, `--runs` times.

    python -m benchmarks.suite_ab --base 71eaa47 [--head HEAD] [--runs 2] -- tests/jobs/test_finetune.py ...

A whole-suite timing moves by minutes between days on this VM (its CPUs are not always as fast), so a change's
effect is read from this ratio instead: both commits meet the same machine within minutes of each other. Each run's
wall time and the machine's busy CPU seconds (/proc/stat, every process) are recorded; the table gives the medians
and head / base. Writes benchmarks/results/<name>.json (table `ab`), which docs/testing.md quotes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.process_cpu import busy_seconds
from benchmarks.results import median, table, write_results
from benchmarks.suite_time import REPO, parse


def clone_at(rev: str, root: Path) -> tuple[Path, str]:
    """A fresh clone of this checkout at `rev` with its venv installed; (its folder, the full commit)."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    folder = root / commit[:7]
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=folder, check=True)
    subprocess.run(["make", "install"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    return folder, commit


def timed_pytest(folder: Path, tests: list[str]) -> dict:
    """One `pytest -n 2` of `tests` in `folder`: wall seconds, the machine's busy CPU seconds, pytest's counts."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    busy, started = busy_seconds(), time.perf_counter()
    proc = subprocess.run(
        [str(folder / ".venv/bin/python"), "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", *tests],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall, busy = time.perf_counter() - started, busy_seconds() - busy
    if proc.returncode:
        raise SystemExit(f"rayfit: the tests failed in {folder} (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return {"wall_s": round(wall, 1), "busy_cpu_s": round(busy, 1), "counts": parse(proc.stdout)["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit before the change")
    parser.add_argument("--head", default="HEAD", help="the commit with it")
    parser.add_argument("--runs", type=int, default=2, help="runs of each, alternating base and head")
    parser.add_argument("--name", default="suite_ab")
    parser.add_argument("tests", nargs="+", help="pytest's selection (files or node ids)")
    args = parser.parse_args()
    measures, roles = ("wall_s", "busy_cpu_s"), ("base", "head")
    with tempfile.TemporaryDirectory(prefix="rayfit-ab-") as tmp:
        clones = [clone_at(rev, Path(tmp)) for rev in (args.base, args.head)]
        runs = []
        for i in range(args.runs):
            for role, (folder, commit) in zip(roles, clones, strict=True):
                runs.append({"role": role, "commit": commit, "round": i + 1, **timed_pytest(folder, args.tests)})
                print(runs[-1], flush=True)
    summary = {role: {k: median([r[k] for r in runs if r["role"] == role]) for k in measures} for role in roles}
    summary["ratio"] = {k: round(summary["head"][k] / summary["base"][k], 3) for k in measures}
    rows = [
        [role, commit[:7], " ".join(args.tests), f"{summary[role]['wall_s']:.0f}", f"{summary[role]['busy_cpu_s']:.0f}"]
        for role, (_, commit) in zip(roles, clones, strict=True)
    ]
    rows.append(["head / base", "", "", f"{summary['ratio']['wall_s']:.2f}", f"{summary['ratio']['busy_cpu_s']:.2f}"])
    header = ["", "commit", "tests", f"wall s (median of {args.runs})", f"busy CPU s (median of {args.runs})"]
    write_results(args.name, runs=runs, summary=summary, tables={"ab": table(header, rows)})


if __name__ == "__main__":
    main()
