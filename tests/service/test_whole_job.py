"""A whole fine-tuning job through the official `openai` client: upload, create, events, evaluation and its gate,
success, and the `ft:` model and a checkpoint of it answering through chat.completions and completions on the same
endpoint, listed by /v1/models. Then a continuous fine-tune: a DPO job on OpenAI's preference format whose `model` is
that `ft:` model trains from it, with the lineage in the job and in its checkpoints' manifests.

Slow (about 5-6 min on a 2-core machine): a real Ray head with its job server, a vLLM engine, a Ray job that prepares
the data, trains 60 LoRA steps on a Ray Train worker and evaluates base against tuned, then a second, shorter Ray job.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import openai
import pytest

from tests.service.conftest import ANSWER, QUESTION, ask, client, preference_rows, training_rows, wait_for

pytestmark = pytest.mark.slow
# Base against tuned on the validation file: tuned may be no worse on eval loss (it is far better after 60 steps).
GATE = {"enabled": True, "max_regression": 0.0, "max_samples": 2, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def finished(service) -> dict:
    """Tenant a's file and its job, run to the end."""
    api = client(service["url"])
    uploaded = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
    held_out = "\n".join(training_rows(n=12).splitlines()[8:]) + "\n"  # other phrasings, the same answer
    valid = api.files.create(file=("valid.jsonl", io.BytesIO(held_out.encode())), purpose="fine-tune")
    base_answer = ask(api, "tiny")
    job = api.fine_tuning.jobs.create(
        model="tiny",
        training_file=uploaded.id,
        validation_file=valid.id,
        suffix="faq",
        seed=7,
        metadata={"run": "e2e"},
        extra_body={"rayfit": {"spec": {"evaluate": GATE}}},
    )
    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    return {"api": api, "file": uploaded, "job": job, "done": done, "base_answer": base_answer}


def test_upload_create_events_succeed_and_the_model_answers(finished, service):
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
    steps = ("Created", "Job started", "Data report", "Plan", "Step", "Evaluation (base -> tuned): eval_loss", "Gate passed")
    order = [next(i for i, m in enumerate(messages) if m.startswith(p)) for p in steps]
    assert order == sorted(order), messages
    assert messages[-1].startswith("Job succeeded")
    losses = [e.data["train_loss"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert len(losses) >= 12 and losses[-1] < losses[0] / 4, losses  # every 5 steps of 60
    report = next(e.data for e in events if e.message.startswith("Data report"))["data_report"]
    assert (report["train_samples"], report["eval_samples"], report["rows_dropped"]) == (8, 4, 0) and report["train_tokens"] > 0
    evaluation = next(e.data for e in events if e.message.startswith("Evaluation"))["evaluation"]
    assert evaluation["eval_loss"]["tuned"] < evaluation["eval_loss"]["base"] / 2, evaluation
    # Pages of events: `after` is the last id of the page before, `limit` its size; together they are the whole list.
    paged, after = [], None
    while True:
        page = api.fine_tuning.jobs.list_events(job.id, limit=7, after=after)
        paged += [e.id for e in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert paged == [e.id for e in reversed(events)]

    assert ANSWER in ask(api, done.fine_tuned_model)
    from transformers import AutoTokenizer

    chat = [{"role": "user", "content": QUESTION}]  # /v1/completions takes the prompt as the chat template renders it
    prompt = AutoTokenizer.from_pretrained(service["args"]["model"]).apply_chat_template(
        chat, add_generation_prompt=True, tokenize=False
    )
    completion = api.completions.create(model=done.fine_tuned_model, prompt=prompt, max_tokens=16, temperature=0)
    assert ANSWER in completion.choices[0].text and completion.model == done.fine_tuned_model
    checkpoints = api.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [60, 30]
    assert checkpoints[0].metrics.train_loss is not None
    assert ask(api, checkpoints[1].fine_tuned_model_checkpoint)  # the step-30 checkpoint answers too

    listed = {m.id: m for m in api.models.list().data}
    assert listed[done.fine_tuned_model].parent == "tiny" and listed[done.fine_tuned_model].owned_by == "tenant_a"
    results = api.files.content(done.result_files[0]).json()
    assert results["job"] == job.id and [h["step"] for h in results["log_history"] if "loss" in h][-1] == 60
    assert results["evaluation"]["gate"]["passed"] and results["evaluation"]["tuned"]["eval_loss"] is not None
    assert api.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"


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


def test_a_dpo_job_continues_the_published_model_with_its_lineage(finished, service):
    """A continuous fine-tune: the job's `model` is the `ft:` model above, its file OpenAI's DPO format. Over a
    minute: a second Ray job (driver, data, a Ray Train worker, 10 DPO steps)."""
    import json

    api, parent_job, parent = finished["api"], finished["job"], finished["done"].fine_tuned_model
    pairs = api.files.create(file=("pairs.jsonl", io.BytesIO(preference_rows().encode())), purpose="fine-tune")
    assert pairs.status == "processed"
    with pytest.raises(openai.BadRequestError) as e:  # pairs train DPO only
        api.fine_tuning.jobs.create(model=parent, training_file=pairs.id)
    assert e.value.body["param"] == "training_file" and "method {type: dpo}" in e.value.body["message"]
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "learning_rate_multiplier": 0.1}}}
    short = {"rayfit": {"spec": {"train": {"max_steps": 10, "logging_steps": 2, "save_steps": 10}}}}
    job = api.fine_tuning.jobs.create(model=parent, training_file=pairs.id, method=method, suffix="dpo", extra_body=short)
    storage = service["storage"]
    adapter = json.loads((storage / "records" / "models" / f"{parent}.json").read_text())["uri"]  # what `parent` serves
    steps = {
        c["uri"]: c["step"]
        for c in map(json.loads, map(Path.read_text, (storage / "jobs" / parent_job.id).glob("checkpoints/*")))
    }
    assert job.model == parent and job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    assert job.rayfit["init_from"] == adapter

    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:dpo:{job.id}"
    events = reversed(api.fine_tuning.jobs.list_events(job.id, limit=100).data)
    losses = [e.data["train_loss"] for e in events if e.type == "metrics"]
    # DPO's loss starts at ln 2 (the policy is its reference, the starting adapter) and falls as chosen pulls ahead
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3) and losses[-1] < losses[0] / 4, losses
    [checkpoint] = api.fine_tuning.jobs.checkpoints.list(job.id).data
    record = json.loads((storage / "jobs" / job.id / "checkpoints" / f"{10:08d}.json").read_text())
    lineage = json.loads((Path(record["uri"]) / "manifest.json").read_text())["lineage"]
    assert lineage["uri"] == adapter and lineage["run"] == parent_job.id and lineage["step"] == steps[adapter]
    assert lineage["method"] == "lora" and checkpoint.step_number == 10
    assert ANSWER in ask(api, done.fine_tuned_model)  # it started from the parent, which gives this answer
    listed = {m.id: m for m in api.models.list().data}
    assert listed[done.fine_tuned_model].parent == "tiny" and parent in listed

    newest = api.fine_tuning.jobs.list(limit=1)  # newest first, one page at a time
    assert [j.id for j in newest.data] == [job.id] and newest.has_more
    older = api.fine_tuning.jobs.list(limit=100, after=job.id).data
    assert older[0].id == parent_job.id and job.id not in [j.id for j in older]


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
