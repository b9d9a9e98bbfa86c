"""`rayfit submit|status|logs|stop|list` without a cluster: one-line errors, auth headers, the upload's contents."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from cluster.errors import UserError
from jobs import ray_jobs

REPO = Path(__file__).resolve().parents[2]


def rayfit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("rayfit", path=str(Path(sys.executable).parent))
    assert exe, "the rayfit console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=REPO, timeout=120, env=env)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_to_an_address_with_nothing_listening_is_one_line():
    address = f"http://127.0.0.1:{closed_port()}"
    r = rayfit("submit", "jobs/specs/demo-cpu.yaml", "--skip-data-check", "--address", address)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"rayfit: cannot reach the Ray job server at {address}")


@pytest.mark.parametrize("command", [["status", "raysubmit_x"], ["logs", "raysubmit_x"], ["stop", "raysubmit_x"], ["list"]])
def test_every_command_reports_an_unreachable_cluster_in_one_line(command):
    r = rayfit(*command, "--address", f"http://127.0.0.1:{closed_port()}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot reach the Ray job server" in r.stderr


def test_submit_refuses_an_invalid_spec_before_contacting_the_cluster(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  base: embedded:smollm2-135m-instruct\ndata:\n  train:\n    - path: embedded:construction-faq\n"
        "output:\n  name: x\n  storage: /tmp/runs\ntrain:\n  max_stpes: 3\n"
    )
    r = rayfit("submit", str(bad), "--working-dir", str(tmp_path), "--address", f"http://127.0.0.1:{closed_port()}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot reach" not in r.stderr  # the spec is checked first
    lines = r.stderr.strip().splitlines()  # one problem: one line
    assert len(lines) == 1 and lines[0].startswith(f"{bad}: train.max_stpes (line 10): unknown key 'max_stpes'.")


def test_submit_refuses_a_spec_outside_the_working_dir(tmp_path):
    r = rayfit("submit", str(REPO / "jobs/specs/demo-cpu.yaml"), "--working-dir", str(tmp_path), "--skip-data-check")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is outside the working dir" in r.stderr and len(r.stderr.strip().splitlines()) == 1


class _FakeJobServer(http.server.BaseHTTPRequestHandler):
    """Answers the version check like a Ray dashboard; 401 unless the right bearer token came."""

    seen: list[str | None] = []
    token = "s3cret-token"

    def do_GET(self):  # noqa: N802
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        ok = auth == f"Bearer {self.token}"
        body = json.dumps({"ray_version": "2.60.0", "version": "4", "session_name": "x"} if ok else {"error": "no"})
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeJobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeJobServer.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_from_the_environment_goes_in_the_authorization_header(fake_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", _FakeJobServer.token)
    ray_jobs.connect(fake_server)
    assert _FakeJobServer.seen and set(_FakeJobServer.seen) == {f"Bearer {_FakeJobServer.token}"}


def test_token_from_a_file_and_a_refused_token(fake_server, monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(UserError, match="needs an auth token and refused ours. Set RAY_AUTH_TOKEN"):
        ray_jobs.connect(fake_server)
    assert _FakeJobServer.seen == ["Bearer wrong-token"]


def test_secrets_are_forwarded_by_name_only_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_value")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    env, sent = ray_jobs.runtime_env(tmp_path, ["HF_TOKEN", "AWS_ACCESS_KEY_ID", "HF_TOKEN"])
    assert sent == ["HF_TOKEN"]
    assert env["env_vars"] == {"HF_TOKEN": "hf_value", **ray_jobs.JOB_ENV}
    assert env["working_dir"] == str(tmp_path) and ".venv/" in env["excludes"]


def _upload_names(tmp_path: Path, excludes: list[str], include_gitignore: bool) -> list[str]:
    """The files Ray would upload for the repo as working dir, built by Ray's own packaging code."""
    from ray._private.runtime_env.packaging import create_package

    target = tmp_path / f"pkg-{len(excludes)}-{include_gitignore}.zip"
    create_package(str(REPO), target, include_gitignore=include_gitignore, excludes=excludes)
    with zipfile.ZipFile(target) as z:
        return z.namelist()


@pytest.mark.parametrize("how", ["rayignore-only", "rayfit-excludes"])
def test_working_dir_upload_skips_virtualenvs_caches_and_runs(how, tmp_path):
    # `ray job submit --working-dir .` relies on .rayignore (tested without .gitignore's help); rayfit adds excludes.
    excludes = ray_jobs.WORKING_DIR_EXCLUDES if how == "rayfit-excludes" else []
    names = _upload_names(tmp_path, excludes, include_gitignore=how == "rayfit-excludes")
    assert "jobs/cli/submit.py" in names and "cluster/storage.py" in names and "jobs/specs/demo-cpu.yaml" in names
    for banned in (".venv/", ".git/", "rayfit-runs/", ".pytest_cache/"):
        assert not any(n.startswith(banned) for n in names), banned
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_node_count_adds_one_when_the_workers_do_not_fit_the_alive_nodes():
    from cluster.spec import validate_spec

    def spec(workers: int, gpus: float):
        return validate_spec(
            {
                "model": {"base": "org/m"},
                "data": {"train": [{"path": "d.jsonl"}]},
                "output": {"name": "r"},
                "cluster": {"num_workers": workers, "gpus_per_worker": gpus, "cpus_per_worker": 2},
            }
        )

    head_only = [{"state": "ALIVE", "resources_total": {"CPU": 0.0, "memory": 8e9}}]  # KubeRay head: num-cpus 0
    one_box = [{"state": "ALIVE", "resources_total": {"CPU": 16.0, "GPU": 2.0}}]
    assert ray_jobs.nodes_for(spec(2, 0), head_only) == 2
    assert ray_jobs.nodes_for(spec(2, 1), one_box) == 1
    assert ray_jobs.nodes_for(spec(4, 1), one_box) == 2
    assert ray_jobs.nodes_for(spec(9, 0), one_box) == 2


def test_submit_refuses_a_spec_whose_plan_does_not_fit_the_clusters_gpus():
    from cluster.errors import UserError
    from cluster.spec import load_spec
    from jobs.cli.submit import _plan_check

    spec = load_spec(Path(__file__).resolve().parents[2] / "jobs/specs/llama-3.1-70b-full-zero3.yaml")
    spec.cluster.num_workers, spec.cluster.accelerator_type = 16, None  # the GPU type comes from the cluster alone
    h100_nodes = [{"resources_total": {"CPU": 192.0, "GPU": 8.0, "accelerator_type:H100": 1.0}}] * 2
    with pytest.raises(UserError, match=r"needs 8\d\.\d GiB per GPU .* Fix: .*offload_optimizer"):
        _plan_check(spec, h100_nodes, dataset_tokens=None)
    spec.cluster.num_workers = 24
    _plan_check(spec, h100_nodes * 2, dataset_tokens=None)  # fits: no error
