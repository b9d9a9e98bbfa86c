"""How long the test suite takes: the README's test command on a fresh clone, or a pytest log already written.

    python -m benchmarks.suite_time --clone [--name suite_time]          # git clone this checkout to a temporary
                                                                          # folder, run `make test` there, time it
    python -m benchmarks.suite_time --log FILE --name suite_time_before  # read a finished run's pytest output
    python -m benchmarks.suite_time --clone --target demo --name demo_fresh_clone   # `make demo` in a fresh clone
    python -m benchmarks.suite_time --clone --cpu                        # and where the CPU time went, by process kind

`--clone` is what CI does: a clean clone (so a missing install step shows), then `make test`, which creates the venv
(pip's cache makes that minutes, not the first download) and runs pytest with `--durations=25`. The wall time is the
whole `make test`; pytest's own line (`N passed, M skipped in S s`) and its 25 slowest steps are parsed from the
output. Writes benchmarks/results/<name>.json (tables `total` and `durations`, and with `--cpu` a table `cpu` from
benchmarks/process_cpu.py), which docs/testing.md quotes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from benchmarks.process_cpu import ProcessCpu
from benchmarks.results import table, write_results

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ (?:passed|failed|error).*?) in (?P<seconds>[\d.]+)s", re.M)
DURATION = re.compile(r"^(?P<seconds>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)", re.M)


def parse(output: str) -> dict:
    """pytest's counts, its own seconds, and the slowest steps it listed (at most 25)."""
    found = SUMMARY.findall(output)
    if not found:
        sys.exit("rayfit: no pytest summary line ('N passed ... in S s') in the output. Fix: pass a complete pytest log.")
    counts_text, seconds = found[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", counts_text)}
    slowest = [{"seconds": float(m["seconds"]), "phase": m["phase"], "test": m["test"]} for m in DURATION.finditer(output)][:25]
    return {"counts": counts, "pytest_s": float(seconds), "slowest": slowest}


def run_clone(log: Path, target: str = "test") -> tuple[str, float, str, dict | None]:
    """(output, wall seconds, commit, the demo's own results or None) of `make TARGET` in a fresh clone of this
    checkout's HEAD; the output is also written to `log` as it comes, so a long run can be followed."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="rayfit-clone-") as tmp:
        clone = Path(tmp) / "rayfit"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        started = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.run(["make", target], cwd=clone, stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        demo = clone / "benchmarks" / "results" / "demo.json"
        demo_results = json.loads(demo.read_text()) if target == "demo" and demo.exists() else None
    output = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode:
        print(output[-5000:])
        sys.exit(f"rayfit: `make {target}` failed in the fresh clone (exit {proc.returncode}); its output is in {log}.")
    return output, wall, commit, demo_results


def write_demo(name: str, wall: float, commit: str, demo: dict | None, command: str | None = None) -> None:
    """The fresh clone's `make demo`: its wall time (the venv's creation included) and the demo's own step times."""
    if demo is None:
        sys.exit("rayfit: `make demo` wrote no benchmarks/results/demo.json in the clone. Fix: run it by hand, read its output.")
    steps = demo["summary"]
    how = "make demo in a fresh git clone (venv created by make from pip's cache)"
    run = {"commit": commit, "how": how, "wall_s": round(wall, 1)}
    header = ["commit", "make demo minutes", "demo minutes (venv ready)", "job seconds"]
    header += ["job success to first token s", "job success to whole answer s"]
    rows = [[(commit or "")[:7], f"{wall / 60:.1f}", f"{steps['total_s'] / 60:.1f}", f"{steps['job_s']:.0f}"]]
    rows[0] += [f"{steps['success_to_first_token_s']:.1f}", f"{steps['success_to_first_answer_s']:.1f}"]
    write_results(
        name,
        runs=[{**run, "demo": demo}],
        summary={"wall_s": run["wall_s"], **steps},
        tables={"total": table(header, rows)},
        command=command,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--clone", action="store_true", help="run `make test` (or --target) in a fresh clone of HEAD")
    source.add_argument("--log", type=Path, help="a finished pytest run's output (with --durations)")
    parser.add_argument("--name", default="suite_time", help="results file name")
    parser.add_argument("--commit", help="with --log: the commit that log's suite ran at")
    parser.add_argument("--output", type=Path, default=Path("suite_time.log"), help="with --clone: where make's output goes")
    parser.add_argument("--target", choices=["test", "demo"], default="test", help="with --clone: the make target")
    parser.add_argument("--cpu", action="store_true", help="with --clone: sample every process's CPU time while it runs")
    args = parser.parse_args()
    cpu = None
    if args.clone:
        with ProcessCpu() if args.cpu else nullcontext() as cpu:
            output, wall, commit, demo = run_clone(args.output.resolve(), args.target)
        if args.target == "demo":
            return write_demo(args.name, wall, commit, demo)
        how = "make test in a fresh git clone (venv created by make from pip's cache)"
    else:
        output, wall, commit = args.log.read_text(encoding="utf-8", errors="replace"), None, args.commit
        how = f"parsed from the pytest output {args.log.name}"
    parsed = parse(output)
    counts = parsed["counts"]
    run = {"commit": commit, "how": how, "wall_s": None if wall is None else round(wall, 1), **parsed}
    minutes = f"{parsed['pytest_s'] / 60:.1f}"
    total = table(
        ["commit", "passed", "skipped", "failed", "errors", "pytest minutes", "make test minutes"],
        [
            [
                (commit or "")[:7],
                counts.get("passed", 0),
                counts.get("skipped", 0),
                counts.get("failed", 0),
                counts.get("errors", 0),
                minutes,
                "" if wall is None else f"{wall / 60:.1f}",
            ]
        ],
    )
    durations = table(["seconds", "phase", "test"], [[f"{s['seconds']:.1f}", s["phase"], s["test"]] for s in parsed["slowest"]])
    tables = {"total": total, "durations": durations}
    if cpu is not None:
        run["cpu_by_kind"], run["busy_cpu_s"], run["heaviest_processes"] = cpu.by_kind(), round(cpu.busy_s, 1), cpu.heaviest()
        tables["cpu"] = cpu.table()
    write_results(
        args.name,
        runs=[run],
        summary={"passed": counts.get("passed", 0), "pytest_s": parsed["pytest_s"], "wall_s": run["wall_s"]},
        tables=tables,
    )


if __name__ == "__main__":
    main()
