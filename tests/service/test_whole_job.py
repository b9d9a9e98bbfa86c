"""A whole fine-tuning job through the official `openai` client: upload, create, events, success, and the `ft:` model
and a checkpoint of it answering through chat.completions on the same endpoint, listed by /v1/models.

Slow (about 3-4 min on a 2-core machine): a real Ray head with its job server, a vLLM engine, and a Ray job that
prepares the data and trains 60 LoRA steps on a Ray Train worker.
"""

from __future__ import annotations

import io

import openai
import pytest

from tests.service.conftest import ANSWER, ask, client, training_rows, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(service) -> dict:
    """Tenant a's file and its job, run to the end."""
    api = client(service["url"])
    uploaded = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
    base_answer = ask(api, "tiny")
    job = api.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, suffix="faq", seed=7, metadata={"run": "e2e"})
    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    return {"api": api, "file": uploaded, "job": job, "done": done, "base_answer": base_answer}


def test_upload_create_events_succeed_and_the_model_answers(finished):
    api, uploaded, job, done, base_answer = (finished[k] for k in ("api", "file", "job", "done", "base_answer"))
    assert uploaded.status == "processed" and uploaded.bytes == len(training_rows().encode())
    assert api.files.content(uploaded.id).content == training_rows().encode()
    assert uploaded.id in [f.id for f in api.files.list().data]
    assert ANSWER not in base_answer
    assert job.status == "queued" and job.id.startswith("ftjob-")
    assert job.hyperparameters.batch_size == 4 and job.hyperparameters.learning_rate_multiplier == 1.0
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


def test_another_tenant_gets_404_for_all_of_it(finished, service):
    file_id, job_id, model = finished["file"].id, finished["job"].id, finished["done"].fine_tuned_model
    other = client(service["url"], "tenant_b")
    assert file_id not in [f.id for f in other.files.list().data]
    assert job_id not in [j.id for j in other.fine_tuning.jobs.list().data]
    assert model not in [m.id for m in other.models.list().data]
    for call in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.fine_tuning.jobs.retrieve(job_id),
        lambda: other.fine_tuning.jobs.cancel(job_id),
        lambda: other.fine_tuning.jobs.list_events(job_id),
        lambda: other.fine_tuning.jobs.checkpoints.list(job_id),
        lambda: other.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]),
        lambda: other.models.delete(model),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as e:  # a file in the body is named as missing, never as someone else's
        other.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    assert e.value.body["param"] == "training_file"
    assert finished["api"].files.retrieve(file_id).id == file_id  # still there for its owner


def test_alias_repoints_under_load_rolls_back_and_unpublish_ends_it(finished):
    """32 requests to an alias while it is repointed: none fails, each is answered by the old or the new target."""
    from concurrent.futures import ThreadPoolExecutor

    api, job = finished["api"], finished["job"]
    model = finished["done"].fine_tuned_model
    step30 = api.fine_tuning.jobs.checkpoints.list(job.id).data[1].fine_tuned_model_checkpoint
    assert api.put("/rayfit/aliases/support-bot", body={"model": model}, cast_to=object)["model"] == model

    def one(_):
        return api.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "hi"}], max_tokens=8).model

    with ThreadPoolExecutor(32) as pool:
        answers = [pool.submit(one, i) for i in range(32)]
        moved = api.put("/rayfit/aliases/support-bot", body={"model": step30}, cast_to=object)
        served = [a.result() for a in answers]
    assert moved["model"] == step30 and moved["previous"] == model
    assert set(served) <= {model, step30} and len(served) == 32
    assert one(0) == step30
    assert api.post("/rayfit/aliases/support-bot/rollback", cast_to=object)["model"] == model
    assert one(0) == model
    aliases = {
        a["name"]: a for a in api.get("/rayfit/aliases", cast_to=object)["data"]
    }  # the service is shared: others may exist
    assert aliases["support-bot"]["model"] == model and aliases["support-bot"]["previous"] == step30

    assert api.models.delete(model).deleted
    assert model not in [m.id for m in api.models.list().data]
    with pytest.raises(openai.NotFoundError):
        ask(api, model)
