"""Where a machine's CPU time goes while something runs: every process sampled each second, its CPU time summed by
kind (a Ray Train worker, a vLLM engine, Ray's own daemons, ...), beside the machine's busy time from /proc/stat.

    with ProcessCpu() as cpu:
        subprocess.run(["make", "test"])
    cpu.table()  # kind | processes | CPU seconds | share of the machine's busy CPU

A process's CPU time is its last sampled value, so a process that lives less than a second may be missed and one
that exits loses at most its last second: the `sampled` row says how much of the machine's busy time is accounted for.
A process's kind is read from its newest full title (a Ray worker starts as `ray::IDLE` and becomes the actor it runs),
except that a pytest process stays one: a library that sets the process title (vLLM's engine does, through
setproctitle) would otherwise move a test process's whole CPU time to that library's kind.
"""

from __future__ import annotations

import re
import threading
import time

import psutil

from benchmarks.results import table

OTHER = "everything else (kernel, system services)"
PYTEST = "pytest and its xdist workers"
# (kind, pattern on "name cmdline"), first match wins: a Ray actor's process title is `ray::<Class>.<method>`.
KINDS: tuple[tuple[str, str], ...] = (
    ("vLLM engines (Serve replicas, generation, rollouts)", r"VLLM|EngineCore|vLLMEngineStage|RolloutEngine|ServeReplica"),
    ("Ray Train workers", r"ray::RayTrainWo"),
    (
        "Ray Train controllers and their helper actors",
        r"ray::(TrainContr|PlacementGroupCleaner|DatasetManager|SynchronizationActor|Preemption)",
    ),
    ("Ray Data actors and tasks", r"ray::(MapWorker|Map\(|ReadFiles|_StatsActor|_AutoscalingCoordinator|ActorLocationTracker)"),
    ("Ray Serve controller and proxy", r"ray::(ServeController|ProxyActor)"),
    ("Ray workers started and never used (ray::IDLE)", r"ray::IDLE"),
    (
        "Ray daemons (GCS, raylet, log monitor, dashboard, agents)",
        r"gcs_server|raylet|log_monitor|dashboard|DashboardAgent|RuntimeEnvAgent|_TelemetryAgent|monitor\.py"
        r"|ray start|ray\.util\.client",
    ),
    ("other Ray tasks and actors", r"ray::"),
    ("the measuring process (benchmarks.suite_time and its sampler)", r"-m benchmarks\.suite_time"),
    ("make's venv set-up (pip)", r"-m pip "),
    (PYTEST, r"-m pytest|/pytest\b(?!-)|import sys;exec\(eval\(sys\.stdin"),
    ("C++ compilers (torch.compile, DeepSpeed ops)", r"^(cc1plus|g\+\+|c\+\+|gcc|ninja|as|ld|collect2) "),  # by process name
    ("Chromium (console tests)", r"chrom"),
    ("Python processes the tests start (jobs, CLIs, one-process baselines)", r"python|rayfit"),
)


def kind(text: str) -> str:
    return next((name for name, pattern in KINDS if re.search(pattern, text)), OTHER)


def busy_seconds() -> float:
    """The machine's CPU seconds spent not idle since boot, all cores together (/proc/stat)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)


class ProcessCpu:
    """A background thread that samples every process once a second while the `with` block runs."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.seen: dict[tuple[int, float], list] = {}  # (pid, start time) -> [first title, newest title, CPU seconds]
        self.before: dict[tuple[int, float], float] = {}  # CPU seconds of the processes already running at the start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessCpu:
        self.busy0, self.wall0 = busy_seconds(), time.monotonic()
        self.sample()
        self.before = {key: seconds for key, (_, _, seconds) in self.seen.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.busy_s, self.wall_s = busy_seconds() - self.busy0, time.monotonic() - self.wall0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time", "cpu_times"]):
            info = proc.info
            if info["cpu_times"] is None or info["create_time"] is None:
                continue
            title = f"{info['name']} {' '.join(info['cmdline'] or [])}"
            entry = self.seen.setdefault((info["pid"], info["create_time"]), [title, title, 0.0])
            if info["cmdline"]:  # an exiting process shows only its name, cut to 15 characters (`ray::ServeRepli`)
                entry[1] = title
            entry[2] = info["cpu_times"].user + info["cpu_times"].system

    def used(self) -> dict[tuple[int, float], tuple[str, float]]:
        """{process: (kind, CPU seconds)} of every process that used CPU while the block ran (one already running at
        the start counts from then)."""
        found = {}
        for key, (first, newest, seconds) in self.seen.items():
            seconds -= self.before.get(key, 0.0)
            if seconds > 0:
                found[key] = (PYTEST if kind(first) == PYTEST else kind(newest), seconds)
        return found

    def by_kind(self) -> dict[str, dict[str, float]]:
        """{kind: {"processes": n, "cpu_s": seconds}}, CPU-heaviest first."""
        found: dict[str, dict[str, float]] = {}
        for name, seconds in self.used().values():
            entry = found.setdefault(name, {"processes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] += seconds
        return dict(sorted(found.items(), key=lambda item: -item[1]["cpu_s"]))

    def heaviest(self, count: int = 25) -> list[dict]:
        """The `count` processes that used the most CPU: kind, CPU seconds, first and newest title (200 characters)."""
        used = self.used()
        top = sorted(used, key=lambda key: used[key][1], reverse=True)[:count]
        return [
            {"kind": used[k][0], "cpu_s": round(used[k][1], 1), "first": self.seen[k][0][:200], "newest": self.seen[k][1][:200]}
            for k in top
        ]

    def table(self) -> dict:
        """kind | processes | CPU seconds | share of the busy CPU, then the sampled total and the machine's busy time."""
        kinds = self.by_kind()
        sampled = sum(k["cpu_s"] for k in kinds.values())
        rows = [[name, k["processes"], f"{k['cpu_s']:.0f}", f"{k['cpu_s'] / self.busy_s:.1%}"] for name, k in kinds.items()]
        processes = sum(int(k["processes"]) for k in kinds.values())
        rows.append(["sampled, all kinds", processes, f"{sampled:.0f}", f"{sampled / self.busy_s:.1%}"])
        machine = f"the machine's busy CPU over {self.wall_s / 60:.1f} min ({psutil.cpu_count()} cores)"
        rows.append([machine, "", f"{self.busy_s:.0f}", "100.0%"])
        return table(["process kind", "processes", "CPU seconds", "share"], rows)
