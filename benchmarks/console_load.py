"""CPU the console adds to the app: a real Chromium with the jobs list open on 10 running jobs, vs no page open.

    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python -m benchmarks.console_load [--window-s 60] [--rounds 3]

One local Ray head with its job server and the service app of tests/service/conftest.py (the tiny model on vLLM,
storage in a temporary folder, one tenant without a job limit). Ten jobs are created through the API; each is a real
Ray job running `jobs.finetune`, and the app shows all ten `running`. The head has 2 logical CPUs and a training
worker asks for 1.5, so one job trains (its metrics events keep coming) and nine drivers wait in Ray for training
resources, as jobs on a full cluster do. Windows of `--window-s` seconds then alternate: no page open, then the
console's jobs list open in headless Chromium (Debian's, through Playwright) with the tenant's key, polling as a user
would see it. Each window adds up the CPU time (utime + stime from /proc) of the app's processes: the Serve replica
with its child processes (the vLLM engine), the HTTP proxy and the Serve controller. Added CPU = CPU seconds per
second over all page windows / the same over all no-page windows - 1 (each adjacent pair is listed too). Goal: under
5%.
Results: benchmarks/results/console_load.json.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import median, table, write_results

N_JOBS = 10
HEAD_CPUS = 2  # logical: one training worker (1.5) fits, a second does not
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat: how loaded a window was."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / TICK, sum(ticks) / TICK


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def app_processes(app: str, address: str) -> dict[str, list[int]]:
    """The app's processes by part: its replica (with the vLLM engine below it), the proxy and the controller."""
    from ray.util.state import list_actors

    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    pids = {"replica": [], "proxy": [], "controller": []}
    for a in alive:
        if a.class_name.startswith(f"ServeReplica:{app}:"):
            pids["replica"] += descendants(a.pid)
        elif a.class_name == "ProxyActor":
            pids["proxy"].append(a.pid)
        elif a.class_name == "ServeController":
            pids["controller"].append(a.pid)
    return pids


def window(pids: dict[str, list[int]], seconds: float, page=None) -> dict:
    """CPU seconds of each part over `seconds` of wall time (the page, if any, polls meanwhile)."""
    requests: list[str] = []
    if page is not None:
        page.on("request", lambda r: requests.append(r.url))
    before = {part: sum(cpu_seconds(p) for p in ps) for part, ps in pids.items()}
    busy_before, _ = machine_cpu()
    start = time.monotonic()
    if page is not None:
        page.wait_for_timeout(seconds * 1000)  # the page polls on its own timers; this also delivers its request events
    else:
        time.sleep(seconds)
    wall = time.monotonic() - start
    after = {part: sum(cpu_seconds(p) for p in ps) for part, ps in pids.items()}
    busy_after, _ = machine_cpu()
    cpu = {part: round(after[part] - before[part], 2) for part in pids}
    return {"seconds": round(wall, 1), "cpu_s": cpu, "app_cpu_s": round(sum(cpu.values()), 2),
            "page_requests": len(requests), "machine_busy_cores": round((busy_after - busy_before) / wall, 2),
            "load": round(os.getloadavg()[0], 2)}  # fmt: skip


def start_jobs(url: str, key: str, n: int) -> list[str]:
    """`n` long jobs on the tiny base (a training file of 8 rows), created through the official client."""
    from openai import OpenAI

    from tests.service.conftest import training_rows

    api = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    file_id = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    long_run = {"rayfit": {"spec": {"train": {"max_steps": 100000, "save_steps": 100000, "logging_steps": 5}}}}
    create = api.fine_tuning.jobs.create
    return [create(model="tiny", training_file=file_id, suffix=f"load{i}", extra_body=long_run).id for i in range(n)]


def wait_running(url: str, key: str, ids: list[str], timeout_s: float = 900) -> None:
    """Until every job is `running` and one has logged a training step."""
    from openai import OpenAI

    api = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    deadline = time.monotonic() + timeout_s
    while True:
        found = [api.fine_tuning.jobs.retrieve(i) for i in ids]
        statuses = [j.status for j in found]
        stepping = any(any(e.type == "metrics" for e in api.fine_tuning.jobs.list_events(i, limit=5).data) for i in ids)
        if statuses == ["running"] * len(ids) and stepping:
            return
        errors = [j.error.message for j in found if j.error]
        if time.monotonic() > deadline or errors:
            raise RuntimeError(f"rayfit: the jobs did not all run: {statuses}, a step logged: {stepping}; errors: {errors[:2]}")
        time.sleep(2)


def open_console(browser, base: str, key: str, n: int):
    """A Chromium tab on the console's jobs list with the key entered, once it shows `n` running jobs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/console")
    page.fill("#key", key)
    page.click("#key-save")
    page.wait_for_function(f"() => document.querySelectorAll('#jobs td.status').length === {n}", timeout=120_000)
    running = page.eval_on_selector_all("#jobs td.status", "tds => tds.map(t => t.textContent)")
    assert running == ["running"] * n, running
    return context, page


def main() -> None:
    """Start the app and the jobs, alternate windows without and with the page, write the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-s", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    chromium = os.environ.get("RAYFIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    parser.add_argument("--chromium", default=chromium)
    opts = parser.parse_args()
    os.environ.update(ENV)
    # The jobs' drivers run `python -m jobs.finetune`: this interpreter's folder first on PATH makes that our venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    import ray
    from playwright.sync_api import sync_playwright
    from ray import serve

    from serve.app import build_app
    from serve.ask import free_port
    from tests.serve.lora_fixtures import serve_base
    from tests.service.conftest import ENGINE, TEMPLATE
    from tests.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="rfload-", dir="/tmp"))
    base_model = serve_base(build_tiny_model(work / "tiny"), work / "base")
    key = "sk-console-load-0123"
    (work / "key").write_text(key + "\n")
    template = copy.deepcopy(TEMPLATE)
    template["cluster"]["cpus_per_worker"] = 1.5
    app = "console"
    port = free_port()
    args = {
        **ENGINE,
        "model": str(base_model),
        "storage": str(work / "storage"),
        "api_keys": [{"file": str(work / "key")}],
        "finetune": {
            "bases": {"tiny": template},
            "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO), **ENV}},
            "entrypoint_num_cpus": 0,
        },
    }
    runs: list[dict] = []
    ctx = ray.init(
        num_cpus=HEAD_CPUS,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        args["finetune"]["ray_address"] = f"http://{ctx.dashboard_url}"  # the job server the app submits to
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=app, route_prefix="/")
        base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1"
        ids = start_jobs(url, key, N_JOBS)
        wait_running(url, key, ids)
        pids = app_processes(app, args["finetune"]["ray_address"])
        print(json.dumps({"pids": pids}), flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=opts.chromium, headless=True)
            try:
                context, page = open_console(browser, base, key, N_JOBS)  # warm: the first load of the assets
                context.close()
                for round_ in range(opts.rounds):
                    runs.append({"case": "no page", "round": round_, **window(pids, opts.window_s)})
                    print(json.dumps(runs[-1]), flush=True)
                    context, page = open_console(browser, base, key, N_JOBS)
                    runs.append({"case": "jobs list open", "round": round_, **window(pids, opts.window_s, page)})
                    context.close()
                    print(json.dumps(runs[-1]), flush=True)
            finally:
                browser.close()
        still = [api_status(url, key, i) for i in ids]
        assert still == ["running"] * N_JOBS, f"a job stopped running during the measurement: {still}"
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    summarize(runs, opts)


def api_status(url: str, key: str, job_id: str) -> str:
    import httpx

    return httpx.get(f"{url}/fine_tuning/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()["status"]


def page_version() -> str:
    """The commit the page came from (and whether serve/console_assets differed from it), for the results file."""

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + local changes" if git("status", "--porcelain", "serve/console_assets") else "")


def summarize(runs: list[dict], opts) -> None:
    """Pooled figure (all page windows' CPU per second over all no-page windows'), each pair, and the table."""
    cases = {
        "no page": [r for r in runs if r["case"] == "no page"],
        "jobs list open": [r for r in runs if r["case"] == "jobs list open"],
    }
    rate = {c: sum(r["app_cpu_s"] for r in rs) / sum(r["seconds"] for r in rs) for c, rs in cases.items()}
    added = rate["jobs list open"] / rate["no page"] - 1
    pairs = [(p["app_cpu_s"] / p["seconds"]) / (n["app_cpu_s"] / n["seconds"]) - 1 for n, p in zip(*cases.values(), strict=True)]
    per_min = sum(r["page_requests"] for r in cases["jobs list open"]) / sum(r["seconds"] for r in cases["jobs list open"]) * 60
    header = [f"app CPU, {N_JOBS} running jobs ({len(pairs)} x {opts.window_s:g} s windows each)", "CPU s per s (all windows)",
              "each window", "page requests per min"]  # fmt: skip
    rows = [
        [c, f"{rate[c]:.4f}", ", ".join(f"{r['app_cpu_s'] / r['seconds']:.3f}" for r in rs),
         f"{per_min:.1f}" if c == "jobs list open" else "0"]
        for c, rs in cases.items()
    ]  # fmt: skip
    rows.append(["added by the page", f"{added:+.1%}", ", ".join(f"{a:+.1%}" for a in pairs) + " (each pair)", ""])
    write_results(
        "console_load",
        runs=runs,
        summary={
            "added": round(added, 4),
            "added_pairs": [round(a, 4) for a in pairs],
            "median_of_pairs": round(median(pairs), 4),
            **{f"{c} cpu_s_per_s": round(r, 4) for c, r in rate.items()},
            "page_requests_per_min": round(per_min, 1),
            "goal": "added < 0.05",
            "page": page_version(),
        },  # fmt: skip
        tables={"console_load": table(header, rows)},
        notes=f"{N_JOBS} real Ray jobs (jobs.finetune) running: one training, the others waiting in Ray for training "
        "resources (2 logical CPUs, 1.5 per worker). App = Serve replica + its children (vLLM engine), proxy, controller.",
    )


if __name__ == "__main__":
    main()
