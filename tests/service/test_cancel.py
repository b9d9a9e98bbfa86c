"""Cancel: a running job ends `cancelled` within 30 s, its Ray job is stopped, no training worker is left and nothing
is published; while it runs, the tenant's max_concurrent_jobs answers 429. Slow: a real Ray job must start training."""

from __future__ import annotations

import io
import time

import openai
import pytest

from tests.service.conftest import client, training_rows, wait_for

pytestmark = pytest.mark.slow


def train_actors(address: str) -> list[str]:
    from ray.util.state import list_actors

    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return [a.class_name for a in alive if "Train" in a.class_name]


def test_cancel_stops_the_ray_job_and_frees_its_workers(service):
    from ray.job_submission import JobSubmissionClient

    api = client(service["url"])
    file_id = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    long_run = {"rayfit": {"spec": {"train": {"max_steps": 5000, "save_steps": 5000}}}}
    job = api.fine_tuning.jobs.create(model="tiny", training_file=file_id, suffix="cancel", extra_body=long_run)
    with pytest.raises(openai.RateLimitError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    assert e.value.body["code"] == "max_concurrent_jobs" and "max_concurrent_jobs (1)" in e.value.body["message"]

    deadline = time.monotonic() + 600
    while not any(ev.type == "metrics" for ev in api.fine_tuning.jobs.list_events(job.id, limit=5).data):
        assert time.monotonic() < deadline, "the job never logged a training step"
        time.sleep(1)
    assert train_actors(service["head"]["jobs"])  # training is running
    running = api.fine_tuning.jobs.retrieve(job.id)  # 5000 steps to go: the estimate is in the future
    assert running.status == "running" and running.estimated_finish > time.time(), running

    start = time.monotonic()
    assert api.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    jobs = JobSubmissionClient(service["head"]["jobs"])
    while str(jobs.get_job_status(f"{job.id}-1")) not in ("STOPPED", "JobStatus.STOPPED") or train_actors(
        service["head"]["jobs"]
    ):
        assert time.monotonic() - start < 30, (jobs.get_job_status(f"{job.id}-1"), train_actors(service["head"]["jobs"]))
        time.sleep(0.5)
    job_after = wait_for(job.id, api, ("cancelled",), timeout_s=5)
    assert job_after.fine_tuned_model is None
    assert not [m.id for m in api.models.list().data if job.id in m.id]
    assert any(ev.message.startswith("Job cancelled") for ev in api.fine_tuning.jobs.list_events(job.id, limit=50).data)
