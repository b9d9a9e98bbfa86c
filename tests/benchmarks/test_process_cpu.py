"""benchmarks/process_cpu.py: process titles sorted into kinds, and a child's CPU time found while it runs."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from benchmarks.process_cpu import OTHER, PYTEST, ProcessCpu, kind


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("ray::RayTrainWorker.run_train_fn", "Ray Train workers"),
        ("ray::TrainController.run", "Ray Train controllers and their helper actors"),
        ("ray::PreemptionWatcher", "Ray Train controllers and their helper actors"),
        ("ray::MapWorker(MapBatches(vLLMEngineStageUDF))", "vLLM engines (Serve replicas, generation, rollouts)"),
        ("ray::MapWorker(MapBatches(_Tokenize))", "Ray Data actors and tasks"),
        ("VLLM::EngineCore", "vLLM engines (Serve replicas, generation, rollouts)"),
        ("ray::IDLE", "Ray workers started and never used (ray::IDLE)"),
        (
            "raylet /x/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/ray/s",
            "Ray daemons (GCS, raylet, log monitor, dashboard, agents)",
        ),
        ("python /x/.venv/bin/python -m pytest -q -n 2", "pytest and its xdist workers"),
        ("python /x/.venv/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))", "pytest and its xdist workers"),
        (
            "python /x/.venv/bin/python -m jobs.finetune /tmp/pytest-of-root/pytest-0/spec.yaml",
            "Python processes the tests start (jobs, CLIs, one-process baselines)",
        ),
        ("cc1plus /usr/lib/gcc/x86_64-linux-gnu/12/cc1plus -quiet", "C++ compilers (torch.compile, DeepSpeed ops)"),
        (
            "python /x/python -c import numpy as np; print(1)",
            "Python processes the tests start (jobs, CLIs, one-process baselines)",
        ),
        ("kdamond.0 ", OTHER),
        ("python /x/python -m pip install -q -e .[test,serve-cpu]", "make's venv set-up (pip)"),
    ],
)
def test_process_titles_are_sorted_into_kinds(title, expected):
    assert kind(title) == expected


def test_a_child_that_burns_cpu_is_counted_under_its_kind():
    """The child burns 2 CPU seconds, then idles for 2 s so that a sample after its burn is sure to come. The sampler
    sees every process on the machine (the other test worker's too), so the child is found by its pid."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 2: pass\ntime.sleep(2)\n"
    with ProcessCpu(interval_s=0.2) as cpu:
        child = subprocess.Popen([sys.executable, "-c", burn])
        assert child.wait(timeout=60) == 0
    [(name, seconds)] = [used for (pid, _), used in cpu.used().items() if pid == child.pid]
    assert name == "Python processes the tests start (jobs, CLIs, one-process baselines)" and 2.0 <= seconds < 2.6
    found = cpu.by_kind()[name]
    assert found["cpu_s"] >= seconds and found["processes"] >= 1, found
    assert cpu.busy_s >= seconds * 0.9  # the machine was busy at least while the child burned
    rows = {row[0]: row for row in cpu.table()["rows"]}
    python = rows["Python processes the tests start (jobs, CLIs, one-process baselines)"]
    assert python[2] == f"{found['cpu_s']:.0f}" and python[3] == f"{found['cpu_s'] / cpu.busy_s:.1%}"
    sampled = sum(k["cpu_s"] for k in cpu.by_kind().values())
    assert rows["sampled, all kinds"][2] == f"{sampled:.0f}" and list(rows)[-1].startswith("the machine's busy CPU over")


def test_a_pytest_process_that_a_library_renames_stays_a_pytest_process():
    """vLLM's engine renames the process it runs in (setproctitle); a test process running one stays under pytest.
    The child waits a second before it renames itself, so that a sample sees its first title, as in a suite."""
    # the title is built at run time: its literal in the command line would make the first title a vLLM one
    rename = "import setproctitle, time\ntime.sleep(1)\nsetproctitle.setproctitle('V' + 'LLM::Engine' + 'Core')\n"
    rename += "t = time.process_time()\n"
    rename += "while time.process_time() - t < 1: pass\ntime.sleep(1.5)\n"
    with ProcessCpu(interval_s=0.2) as cpu:
        child = subprocess.Popen([sys.executable, "-c", rename, "-m", "pytest"])  # "-m pytest" in its first title
        child.wait()
    renamed = [p for p in cpu.heaviest() if p["newest"].startswith("VLLM::EngineCore")]
    assert renamed and renamed[0]["kind"] == PYTEST and renamed[0]["first"].startswith("python "), renamed
    assert renamed[0]["cpu_s"] >= 1.0


def test_an_exiting_process_keeps_the_kind_of_its_last_full_title():
    """A process that has exited but is not yet reaped shows no command line, only its name (`python`): it stays
    under the kind its full title gave it. The child burns 1 CPU second, exits, and is reaped only after samples."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass\n"
    with ProcessCpu(interval_s=0.2) as cpu:
        child = subprocess.Popen([sys.executable, "-c", burn, "-m", "pip", "install"])
        zombie, deadline = psutil.Process(child.pid), time.monotonic() + 30
        while zombie.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:  # exited, not reaped
            time.sleep(0.05)
        assert zombie.status() == psutil.STATUS_ZOMBIE
        time.sleep(1)  # five samples of the exited child
        child.wait()
    found = cpu.by_kind()
    assert found["make's venv set-up (pip)"]["cpu_s"] >= 0.9, found
