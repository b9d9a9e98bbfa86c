"""Restarts while a job runs: the app is shut down and started again, then its replica is killed. Each time every
record is back (files, the job, its events), and the job, whose Ray job kept running, finishes and is published.

Slow (several minutes): a Ray job trains while the vLLM engine is started twice more.
"""

from __future__ import annotations

import io
import time

import pytest

from tests.service.conftest import ANSWER, ask, client, training_rows, wait_for

pytestmark = pytest.mark.slow


def replica_names(address: str) -> list[str]:
    from ray.util.state import list_actors

    alive = list_actors(address=address, filters=[("class_name", "=", "ServeReplica:svc:OpenAIServer"), ("state", "=", "ALIVE")])
    return [a.name for a in alive]


def records(api, job_id: str) -> tuple:
    return (
        sorted(f.id for f in api.files.list().data),
        api.fine_tuning.jobs.retrieve(job_id).created_at,
        [e.id for e in api.fine_tuning.jobs.list_events(job_id, limit=100).data][-3:],  # the oldest three
    )


def assert_back(before: tuple, now: tuple) -> None:
    """Every file, the job and its first events are there again (a finishing job may have added a results file)."""
    assert set(before[0]) <= set(now[0]) and before[1:] == now[1:], (before, now)


def wait_until_serving(api, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api.models.list()
            return
        except Exception:  # noqa: BLE001 - the proxy answers 404/503 until the new replica is up
            assert time.monotonic() < deadline, "the app did not come back"
            time.sleep(1)


def test_job_survives_an_app_restart_and_a_killed_replica(service):
    import ray
    from ray import serve

    from serve.app import build_app

    api = client(service["url"])
    file_id = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    long_run = {"rayfit": {"spec": {"train": {"max_steps": 600, "save_steps": 300, "logging_steps": 50}}}}
    job = api.fine_tuning.jobs.create(model="tiny", training_file=file_id, suffix="restart", extra_body=long_run)
    wait_for(job.id, api, ("running",))
    before = records(api, job.id)

    serve.delete("svc")  # the app is shut down while its job trains
    serve.run(build_app(service["args"]), name="svc", route_prefix="/svc")
    wait_until_serving(api)
    assert_back(before, records(api, job.id))

    address = service["head"]["jobs"]
    (old,) = replica_names(address)
    ray.kill(ray.get_actor(old, namespace="serve"))
    deadline = time.monotonic() + 600
    while replica_names(address) in ([], [old]):
        assert time.monotonic() < deadline, "Serve did not replace the killed replica"
        time.sleep(1)
    wait_until_serving(api)
    assert_back(before, records(api, job.id))

    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"), timeout_s=900)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model in [m.id for m in api.models.list().data]
    assert ANSWER in ask(api, done.fine_tuned_model)
