"""A whole fine-tuning job through the official `openai` client: upload, create, events, success, and the `ft:` model
and a checkpoint of it answering through chat.completions on the same endpoint, listed by /v1/models.

Slow (about 3-4 min on a 2-core machine): a real Ray head with its job server, a vLLM engine, and a Ray job that
prepares the data and trains 60 LoRA steps on a Ray Train worker.
"""

from __future__ import annotations

import io

import pytest

from tests.service.conftest import ANSWER, ask, client, training_rows, wait_for

pytestmark = pytest.mark.slow


def test_upload_create_events_succeed_and_the_model_answers(service):
    api = client(service["url"])
    uploaded = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.bytes == len(training_rows().encode())
    assert api.files.content(uploaded.id).content == training_rows().encode()
    assert uploaded.id in [f.id for f in api.files.list().data]

    base_answer = ask(api, "tiny")
    assert ANSWER not in base_answer

    job = api.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, suffix="faq", seed=7, metadata={"run": "e2e"})
    assert job.status == "queued" and job.id.startswith("ftjob-")
    assert job.hyperparameters.batch_size == 4 and job.hyperparameters.learning_rate_multiplier == 1.0
    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:faq:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert [j.id for j in api.fine_tuning.jobs.list(metadata={"run": "e2e"}).data] == [job.id]

    events = list(reversed(api.fine_tuning.jobs.list_events(job.id, limit=100).data))  # the API lists newest first
    messages = [e.message for e in events]
    steps = ("Created", "Job started", "Data report", "Plan", "Step")
    order = [next(i for i, m in enumerate(messages) if m.startswith(p)) for p in steps]
    assert order == sorted(order), messages
    assert messages[-1].startswith("Job succeeded")
    losses = [e.data["train_loss"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert len(losses) >= 12 and losses[-1] < losses[0] / 4, losses  # every 5 steps of 60

    assert ANSWER in ask(api, done.fine_tuned_model)
    checkpoints = api.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [60, 30]
    assert checkpoints[0].metrics.train_loss is not None
    assert ask(api, checkpoints[1].fine_tuned_model_checkpoint)  # the step-30 checkpoint answers too

    listed = {m.id: m for m in api.models.list().data}
    assert listed[done.fine_tuned_model].parent == "tiny" and listed[done.fine_tuned_model].owned_by == "tenant_a"
    results = api.files.content(done.result_files[0]).json()
    assert results["job"] == job.id and results["log_history"]
