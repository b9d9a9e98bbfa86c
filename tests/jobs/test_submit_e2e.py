"""End to end against a real local head (`ray start --head` on 127.0.0.1, free ports): the plain `ray job submit`
CLI and `rayfit submit|logs|status|list|stop` run jobs, and the fine-tune leaves a checkpoint with its manifest."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cluster.errors import UserError
from jobs import ray_jobs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINETUNE = REPO / "jobs" / "finetune.py"
pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free right now on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def local_head(auth: dict[str, str]):
    """A local Ray head with the dashboard (the job server) on a free port; stopped, with all it started, after."""
    temp = Path(tempfile.mkdtemp(prefix="rfe2e-", dir="/tmp"))  # short: Ray's unix socket paths must stay < 108 chars
    gcs, dashboard, client, agent = free_ports(4)
    # One RAY_AUTH_MODE for the head and every client (docs/platform-notes.md); .venv first so the job's `python` is ours.
    env = {
        **os.environ,
        **auth,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(temp),
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(gcs),
            "--dashboard-port",
            str(dashboard),
            "--num-cpus",
            "3",
            "--include-dashboard=true",
            "--dashboard-host",
            "127.0.0.1",
            "--node-ip-address",
            "127.0.0.1",
            "--ray-client-server-port",
            str(client),
            "--dashboard-agent-listen-port",
            str(agent),
            "--temp-dir",
            str(temp),
            "--object-store-memory",
            str(200 * 1024**2),
            "--disable-usage-stats",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=temp,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_job_server(address, proc, temp / "head.log")
        yield {"address": address, "env": {**env, "RAY_API_SERVER_ADDRESS": address}, "temp": temp}
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    with local_head({"RAY_AUTH_MODE": "disabled"}) as h:
        yield h


def _wait_for_job_server(address: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{address}/api/version", timeout=2).status_code in (200, 401):  # 401: up, wants a token
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"the job server at {address} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM lets `ray start --block` stop what it started; then kill whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def run(cmd: list[str], env: dict, cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def rayfit(*args: str, env: dict, cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess:
    return run([str(BIN / "rayfit"), *args], env=env, cwd=cwd, timeout=timeout)


def tiny_spec(path: Path, model_dir: Path, storage: Path, name: str) -> Path:
    """A spec that LoRA-tunes the tiny model for 3 steps on 1 CPU worker, with a checkpoint at the end."""
    data = path.parent / "data.jsonl"
    rows = [
        {"instruction": f"What is item {i}?", "input": "", "output": f"Item {i} is a brick for wall {i % 5}."} for i in range(24)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "model": {"base": str(model_dir), "method": "lora", "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
        "data": {"train": [{"path": str(data), "format": "alpaca"}], "eval_split": 0.0, "max_seq_len": 128},
        "train": {
            "max_steps": 3,
            "save_steps": 3,
            "logging_steps": 1,
            "eval_steps": None,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "learning_rate": 1e-3,
        },
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "output": {"storage": str(storage), "name": name},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def checkpoint_with_manifest(storage: Path, name: str) -> tuple[Path, dict]:
    """The newest complete checkpoint of a run and its manifest."""
    done = sorted(p.parent for p in (storage / name).glob("checkpoint_*/manifest.json"))
    assert done, (
        f"no checkpoint with a manifest.json under {storage / name}: {sorted(p.name for p in (storage / name).iterdir())}"
    )
    manifest = json.loads((done[-1] / "manifest.json").read_text())
    return done[-1], manifest


def working_dir_with_rayfit(tmp: Path) -> Path:
    """A project folder as a user would submit it: rayfit's packages plus their own spec and code."""
    wd = tmp / "project"
    for pkg in ("cluster", "jobs"):
        shutil.copytree(REPO / pkg, wd / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return wd


needs_finetune = pytest.mark.skipif(not FINETUNE.exists(), reason="jobs/finetune.py is not written yet (training engineer)")


@needs_finetune
def test_ray_job_submit_and_rayfit_submit_both_run_the_finetune(head, cli, tiny_model_dir, tmp_path, monkeypatch):
    # The two jobs run at once on the 3-CPU head (one CPU worker each), which halves the wall time of this test.
    plain_spec = tiny_spec(tmp_path / "spec.yaml", tiny_model_dir, tmp_path / "runs", "plain")
    plain_log = tmp_path / "ray-job-submit.log"
    with open(plain_log, "w") as log:
        plain = subprocess.Popen(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                head["address"],
                "--working-dir",
                ".",
                "--",
                "python",
                "-m",
                "jobs.finetune",
                str(plain_spec),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=head["env"],
            cwd=REPO,
        )
        wd = working_dir_with_rayfit(tmp_path)
        (wd / "specs").mkdir()
        spec = tiny_spec(wd / "specs" / "tiny.yaml", tiny_model_dir, tmp_path / "runs", "via-rayfit")
        r = rayfit("submit", "specs/tiny.yaml", "--working-dir", ".", env=head["env"], cwd=wd)  # the console script
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        assert job_id.startswith("raysubmit_") and "data check passed" in r.stderr, r.stdout + r.stderr
        monkeypatch.chdir(wd)
        code, stdout, stderr = cli("logs", job_id, "--follow")
        assert code == 0, stdout[-4000:] + stderr[-2000:]
        assert f"job {job_id} SUCCEEDED" in stderr and "rayfit: best checkpoint" in stdout
        assert cli("status", job_id)[1].strip() == f"{job_id} SUCCEEDED"
        listed = cli("list")[1]
        assert any(
            line.startswith(f"{job_id}\tSUCCEEDED") and line.endswith(f"python -m jobs.finetune {spec.relative_to(wd)}")
            for line in listed.splitlines()
        ), listed
        plain.wait(timeout=300)
    assert plain.returncode == 0, plain_log.read_text()[-4000:]
    assert "succeeded" in plain_log.read_text().lower()
    for name in ("plain", "via-rayfit"):
        ckpt, manifest = checkpoint_with_manifest(tmp_path / "runs", name)
        assert manifest["kind"] == "checkpoint" and manifest["method"] == "lora" and manifest["step"] == 3
        assert manifest["spec"]["output"]["name"] == name and (ckpt / "adapter_config.json").is_file()
        adapter = ckpt / "adapter_model.safetensors"
        assert manifest["files"]["adapter_model.safetensors"]["bytes"] == adapter.stat().st_size


PROBE = '''"""Job for the CLI mechanics: checks what rayfit sent, writes a marker, then fails or sleeps as asked."""
import os, sys, time
from pathlib import Path
from cluster.spec import load_spec

spec = load_spec(sys.argv[1])
out = Path(spec.output.storage) / spec.output.name
out.mkdir(parents=True, exist_ok=True)
(out / "seen.txt").write_text(f"{os.getcwd()}\\n{os.environ.get('RAYFIT_E2E_SECRET') == 'value-42'}\\n")
print("probe: spec", spec.output.name, "loaded", flush=True)
if spec.output.name.startswith("fail"):
    raise SystemExit("probe: failing on purpose with a clear reason")
time.sleep(120)
'''


def probe_project(tmp_path: Path, name: str) -> tuple[Path, Path]:
    wd = working_dir_with_rayfit(tmp_path)
    (wd / "probe.py").write_text(PROBE)
    (wd / "specs").mkdir()
    spec = {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": "embedded:construction-faq"}]},
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "output": {"storage": str(tmp_path / "runs"), "name": name},
    }
    (wd / "specs" / "probe.yaml").write_text(yaml.safe_dump(spec))
    return wd, tmp_path / "runs" / name


@pytest.fixture
def cli(head, monkeypatch):
    """`rayfit ARGS` in this process (same code as the console script, without paying Ray's import each time)."""
    from jobs.cli import main

    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", head["address"])
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(head["temp"]))  # no ~/.ray/auth_token from the real home

    def call(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        # Ray's logger writes to the stderr it saw first; point it at ours for the call, then put it back.
        handlers = [
            h
            for h in logging.getLogger("ray").handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        saved = [h.stream for h in handlers]
        try:
            for h in handlers:
                h.stream = err
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            for h, stream in zip(handlers, saved, strict=False):
                h.stream = stream
        return code, out.getvalue(), err.getvalue()

    return call


def test_a_failed_job_ends_follow_and_status_with_its_log_tail(cli, tmp_path, monkeypatch):
    wd, out = probe_project(tmp_path, "fail-on-purpose")
    monkeypatch.chdir(wd)
    code, stdout, stderr = cli("submit", "specs/probe.yaml", "--module", "probe", "--skip-data-check", "--follow")
    assert code == 1
    job_id = stdout.splitlines()[0]
    head_part, tail = stderr.split("--- last lines of its log ---")
    assert f"rayfit: job {job_id} FAILED:" in head_part and "Traceback" not in head_part
    assert "probe: failing on purpose with a clear reason" in tail
    code, stdout, stderr = cli("status", job_id)
    assert code == 1 and stdout.strip() == f"{job_id} FAILED" and "probe: failing on purpose" in stderr
    cwd, secret_seen = (out / "seen.txt").read_text().split()
    assert "working_dir_files" in cwd and secret_seen == "False"  # a job runs in its uploaded copy


def test_stop_and_forwarded_secret_names(cli, tmp_path, monkeypatch):
    wd, out = probe_project(tmp_path, "sleeper")
    monkeypatch.chdir(wd)
    monkeypatch.setenv("RAYFIT_E2E_SECRET", "value-42")
    code, stdout, stderr = cli(
        "submit", "specs/probe.yaml", "--module", "probe", "--skip-data-check", "--env", "RAYFIT_E2E_SECRET"
    )
    assert code == 0, stderr
    assert "forwarding environment variables: RAYFIT_E2E_SECRET (values not shown here" in stderr
    assert "value-42" not in stdout + stderr
    job_id = stdout.strip()
    deadline = time.monotonic() + 90
    while not (out / "seen.txt").exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert (out / "seen.txt").read_text().split()[1] == "True"  # the job got the value, by name
    code, stdout, _ = cli("stop", job_id, "--wait")
    assert code == 0 and stdout.splitlines() == [f"{job_id} stop requested", f"{job_id} STOPPED"], stdout
    code, stdout, _ = cli("list")
    assert f"{job_id}\tSTOPPED\t" in stdout and stdout.splitlines()[0].startswith(job_id)  # newest first


def test_local_storage_is_refused_when_the_run_needs_more_nodes(cli, tmp_path, monkeypatch):
    wd, _ = probe_project(tmp_path, "too-big")
    spec = yaml.safe_load((wd / "specs" / "probe.yaml").read_text())
    spec["cluster"]["num_workers"] = 4  # 4 CPUs on a 3-CPU head: another node must come
    (wd / "specs" / "probe.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(wd)
    code, stdout, stderr = cli("submit", "specs/probe.yaml", "--module", "probe", "--skip-data-check")
    assert code == 2 and stdout == "" and "Traceback" not in stderr  # refused before anything was submitted
    assert "output.storage" in stderr and "cluster has 2 nodes" in stderr


def test_a_token_auth_cluster_gets_the_token_from_the_environment(monkeypatch, tmp_path):
    token = "e2e-" + os.urandom(16).hex()
    with local_head({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as h:
        for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):  # a laptop sets no auth mode
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        with pytest.raises(UserError) as e:
            ray_jobs.connect(h["address"])
        assert str(e.value) == (
            f"the Ray cluster at {h['address']} needs an auth token and none was found. "
            "Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token."
        )
        monkeypatch.setenv("RAY_AUTH_TOKEN", "not-" + token)
        with pytest.raises(UserError, match="refused ours"):
            ray_jobs.connect(h["address"])
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
        assert ray_jobs.call(ray_jobs.connect(h["address"]).list_jobs) == []
