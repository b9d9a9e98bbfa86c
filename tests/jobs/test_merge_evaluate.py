"""The merge and evaluate entrypoints as users run them: `python -m jobs.merge RUN`, `python -m jobs.evaluate RUN`.

One real `python -m` process for each entrypoint; the other cases call the same `main()` in-process, since on a
loaded 2-core box each new interpreter spends 10-30 s importing torch and transformers. The run here evaluates with
`max_samples: 0` (eval loss only): no vLLM engine starts in this module; evaluation's answers on vLLM are tested in
tests/cluster/evaluation/test_evaluate_run.py and, inside the whole job, in tests/jobs/test_finetune.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from cluster.manifest import write_manifest
from cluster.spec import JobSpec
from jobs import evaluate as evaluate_job
from jobs import merge as merge_job
from tests.cluster.evaluation.runs import train_run
from tests.conftest import private_ray

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    train_run(tiny_model_dir, storage, steps=20, max_samples=0)
    return storage / "eval-run"


def test_merge_then_evaluate_a_run_folder(run_dir, capsys):
    merged = _run("jobs.merge", str(run_dir))
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.strip().splitlines()[-1] == str(run_dir / "export")  # last line: DeepSpeed prints on import
    written = (run_dir / "export" / "manifest.json").stat().st_mtime_ns
    assert merge_job.main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "export")
    assert (run_dir / "export" / "manifest.json").stat().st_mtime_ns == written  # reused, not merged again

    evaluated = _run("jobs.evaluate", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "| eval loss |" in evaluated.stdout and f"reports: {run_dir / 'eval'}" in evaluated.stdout
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["tuned"]["model"] == str(run_dir / "export")
    assert report["tuned"]["eval_loss"] < report["base"]["eval_loss"]


def test_user_errors_are_one_line_and_the_gate_fails_the_job(run_dir, tiny_model_dir, tmp_path, capsys):
    assert merge_job.main([str(tmp_path / "nothing-here")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayfit: ") and "no complete checkpoint" in err and len(err.strip().splitlines()) == 1

    # Gate: compare against the trained export as "base" with the untrained model as "tuned", which is worse.
    assert merge_job.main([str(run_dir)]) == 0
    untrained = tmp_path / "untrained"
    shutil.copytree(tiny_model_dir, untrained)
    spec = json.loads((run_dir / "export" / "manifest.json").read_text())["spec"]
    spec["model"]["base"] = str(run_dir / "export")
    spec["evaluate"]["max_regression"] = 0.0
    write_manifest(untrained, "export", spec=spec, method="lora")
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert evaluate_job.main([str(untrained), "--spec", str(tmp_path / "gate.yaml"), "--out", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err
    assert "\nrayfit: evaluation gate failed: tuned eval_loss is worse than base" in err and "Traceback" not in err
    assert (tmp_path / "eval" / "report.md").exists()


@pytest.fixture
def ray_with_state_api():
    """A private local Ray with its dashboard on a free port: Ray's state API (list_tasks) is served by it."""
    import socket

    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = private_ray(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        object_store_memory=200 * 1024**2,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield context
    finally:
        ray.shutdown()


def test_merge_and_evaluate_run_as_ray_tasks_with_the_planners_requests(run_dir, ray_with_state_api, tmp_path):
    """What jobs.finetune does after training: both steps as Ray tasks, their requests read back from Ray's state API."""
    from ray.util.state import list_tasks

    from cluster.planner import make_plan
    from cluster.planner.plan import with_changes
    from cluster.tasks import EVALUATE_TASK, MERGE_TASK, evaluate_on_cluster, merge_on_cluster

    trained = json.loads(next(run_dir.glob("checkpoint_*/manifest.json")).read_text())["spec"]
    spec = with_changes(JobSpec.model_validate(trained), {"cluster": {"gpus_per_worker": 0}})  # a CPU cluster
    plan = make_plan(spec)
    assert plan.merge.num_gpus == plan.evaluate.num_gpus == 0
    export = merge_on_cluster(str(run_dir), spec.merge.into, plan.merge)
    assert export == str(run_dir / "export") and (run_dir / "export" / "manifest.json").is_file()
    report = evaluate_on_cluster(spec, export, str(tmp_path / "eval"), plan.evaluate)
    assert report["tuned"]["eval_loss"] < report["base"]["eval_loss"] and (tmp_path / "eval" / "report.json").is_file()

    address = "http://" + ray_with_state_api.dashboard_url
    for _ in range(60):  # task events reach the state API a moment after the task ends
        tasks = {t.name: t for t in list_tasks(address=address, detail=True, raise_on_missing_output=False)}
        if all(tasks.get(n) is not None and tasks[n].state == "FINISHED" for n in (MERGE_TASK, EVALUATE_TASK)):
            break
        time.sleep(1)
    for name, request in ((MERGE_TASK, plan.merge), (EVALUATE_TASK, plan.evaluate)):
        assert tasks[name].state == "FINISHED"
        assert tasks[name].required_resources == {"CPU": 1.0, "memory": float(request.host_ram)}, name
    assert min(plan.merge.host_ram, plan.evaluate.host_ram) > 2**30  # the planner's figures (interpreter included)
