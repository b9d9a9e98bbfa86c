"""Ray's queue, pause, resume and the evaluation gate on one short job of the session's service (a real Ray head and
job server, vLLM, the tiny model), through the official `openai` client.

The job is created while an actor holds every free CPU: it stays `queued` (its Ray job PENDING) until they are free.
It is paused as soon as its driver runs, so its run checkpoints at the first training step and stops; resumed, it
continues at the next step in a second Ray job (whose log `ray job logs` and `rayfit logs <ftjob-id>` print). Its gate asks for
the impossible (exact match must rise by more than 1.0, on a 0-1 score), so it ends `failed` with `eval_regression`,
the metrics in its message, and nothing published.

Slow (about 2-3 min on a 2-core machine): two Ray jobs, each starting a Ray Train worker, then an evaluation task.
"""

from __future__ import annotations

import io
import time
from contextlib import contextmanager

import openai
import pytest

from jobs.cli import main
from tests.service.conftest import QUESTION, client, training_rows, wait_for

pytestmark = pytest.mark.slow
STEPS = 12
IMPOSSIBLE_GATE = {"enabled": True, "gate_metric": "exact_match", "min_improvement": 1.0, "max_samples": 2, "max_new_tokens": 4}


def metrics_steps(api, job_id: str) -> list[tuple[str, int]]:
    """(event id, step) of every `metrics` event, oldest first."""
    found = api.fine_tuning.jobs.list_events(job_id, limit=100).data
    return [(e.id, e.data["step"]) for e in reversed(found) if e.type == "metrics"]


def settled_free_cpus(service, timeout_s: float = 300) -> float:
    """The CPUs Ray has free once every Ray job submitted earlier has ended and that number has held still for 3 s:
    an earlier test's job releases its workers' CPUs after it ends, and a CPU freed after the holder took its share
    would let the job start."""
    import ray
    from ray.job_submission import JobSubmissionClient

    ray_jobs = JobSubmissionClient(service["head"]["jobs"])
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        live = [j.submission_id for j in ray_jobs.list_jobs() if j.submission_id and not j.status.is_terminal()]  # not drivers
        free = ray.available_resources().get("CPU", 0)
        if live or free != last:
            last, since = free, time.monotonic()
        elif time.monotonic() - since >= 3:
            return free
        time.sleep(0.5)
    pytest.fail(f"the head did not settle in {timeout_s} s: Ray jobs not ended {live}, free CPUs {free}")


@contextmanager
def cluster_full(service):
    """An actor holds every CPU Ray has free (the test process is connected to the session's Ray) until the block ends."""
    import ray

    @ray.remote
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.options(num_cpus=settled_free_cpus(service)).remote()
    ray.get(holder.ready.remote(), timeout=60)
    try:
        yield
    finally:
        ray.kill(holder)


def waits_in_rays_queue(api, job_id: str, service) -> list[tuple[str, str]]:
    """(service status, Ray status) seen over two reconcile periods: long enough for the app to act on what Ray says."""
    from ray.job_submission import JobSubmissionClient

    ray_jobs = JobSubmissionClient(service["head"]["jobs"])
    seen, until = [], time.monotonic() + 2 * service["args"]["finetune"]["reconcile_s"] + 1
    while time.monotonic() < until:
        seen.append((api.fine_tuning.jobs.retrieve(job_id).status, str(ray_jobs.get_job_status(f"{job_id}-1")).split(".")[-1]))
        time.sleep(0.5)
    return seen


@pytest.fixture(scope="module")
def gated(service) -> dict:
    """Tenant c's job: paused while its driver prepares, resumed, then run to its end (the gate)."""
    api = client(service["url"], "tenant_c")
    train = api.files.create(file=("train.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
    held_out = training_rows(n=12).splitlines()[8:]  # other phrasings than the training rows (no contamination)
    valid = api.files.create(file=("valid.jsonl", io.BytesIO(("\n".join(held_out) + "\n").encode())), purpose="fine-tune")
    spec = {"train": {"max_steps": STEPS, "logging_steps": 1, "save_steps": 6}, "evaluate": IMPOSSIBLE_GATE}
    with cluster_full(service):  # the job waits in Ray's queue while no CPU is free
        job = api.fine_tuning.jobs.create(
            model="tiny", training_file=train.id, validation_file=valid.id, suffix="gate", extra_body={"rayfit": {"spec": spec}}
        )
        waiting = waits_in_rays_queue(api, job.id, service)
    wait_for(job.id, api, ("running",))
    asked = api.fine_tuning.jobs.pause(job.id)
    paused = wait_for(job.id, api, ("paused", "succeeded", "failed", "cancelled"))
    before = metrics_steps(api, job.id)
    resumed = api.fine_tuning.jobs.resume(job.id)
    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    return {
        "api": api,
        "job": job,
        "waiting": waiting,
        "asked": asked,
        "paused": paused,
        "before": before,
        "resumed": resumed,
        "done": done,
    }


def test_a_job_waits_in_rays_queue_while_the_cluster_is_full(gated):
    assert set(gated["waiting"]) == {("queued", "PENDING")}, gated["waiting"]
    assert gated["paused"].status == "paused"  # and it ran once CPUs were free again


def test_a_paused_job_resumes_at_the_step_after_its_checkpoint(gated, service, capsys):
    from ray.job_submission import JobSubmissionClient

    job, paused, resumed = gated["job"], gated["paused"], gated["resumed"]
    assert gated["asked"].status == "running"  # the run checkpoints first; the driver then marks it paused
    assert paused.status == "paused", paused.error
    step = paused.rayfit["paused_at_step"]
    assert 1 <= step < STEPS
    assert [s for _, s in gated["before"]] == list(range(1, step + 1))  # logging_steps 1: every step before the pause
    ray_jobs = JobSubmissionClient(service["head"]["jobs"])
    assert str(ray_jobs.get_job_status(f"{job.id}-1")).endswith("SUCCEEDED")  # the first Ray job ended after its checkpoint

    assert resumed.status == "queued" and resumed.rayfit["ray_job_id"] == f"{job.id}-2" and resumed.rayfit["attempt"] == 2
    after = [s for i, s in metrics_steps(gated["api"], job.id) if i > gated["before"][-1][0]]
    assert after == list(range(step + 1, STEPS + 1)), after  # continues at the next step, none trained twice

    # The second attempt's log, through Ray's job server and through `rayfit logs`.
    log = ray_jobs.get_job_logs(f"{job.id}-2")
    assert "rayfit: resuming from " in log and f"rayfit: step {step + 1}/{STEPS} " in log, log[-3000:]
    assert main(["logs", job.id, "--address", service["head"]["jobs"]]) == 0  # the ftjob- id: its newest attempt
    assert f"step {STEPS}/{STEPS}" in capsys.readouterr().out


def test_an_impossible_gate_fails_the_job_and_publishes_nothing(gated):
    api, job, done = gated["api"], gated["job"], gated["done"]
    assert done.status == "failed" and done.error.code == "eval_regression", done.error
    message = done.error.message
    assert "evaluate.min_improvement 1.0" in message and "Metrics (base -> tuned): eval_loss " in message, message
    assert "exact_match" in message.split("Metrics")[1], message
    events = [e.message for e in reversed(api.fine_tuning.jobs.list_events(job.id, limit=100).data)]
    evaluation = next(i for i, m in enumerate(events) if m.startswith("Evaluation (base -> tuned): eval_loss"))
    assert events[evaluation + 1].startswith("Gate failed: tuned - base on exact_match is in ["), events
    assert events[-1].startswith("Job failed: evaluation gate failed"), events

    assert done.fine_tuned_model is None and done.result_files == []
    assert not [m.id for m in api.models.list().data if job.id in m.id]
    assert api.fine_tuning.jobs.checkpoints.list(job.id).data == []
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model=f"ft:tiny:gate:{job.id}", messages=[{"role": "user", "content": QUESTION}])
