"""Bad requests through the official `openai` client: each is an OpenAI-shaped 4xx naming the parameter, answered
within a second, and nothing is stored. Also the per-tenant stored-bytes limit (429 naming it)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import openai
import pytest

from tests.service.conftest import client, preference_rows, training_rows

pytestmark = pytest.mark.slow  # shares the session's Ray head and vLLM app (tests/service/conftest.py)


def stored(storage: Path) -> list[str]:
    return sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file())


def refused(call, status: int, param: str | None, *words: str) -> None:
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        call()
    assert time.monotonic() - start < 1.0
    assert e.value.status_code == status, e.value
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"}, body  # OpenAI's error object
    assert body["param"] == param, body
    for word in words:
        assert word in body["message"], body["message"]


def upload(api, name: str, data: bytes, purpose: str = "fine-tune"):
    return lambda: api.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def test_bad_files_are_refused_and_nothing_is_stored(service):
    api = client(service["url"])
    before = stored(service["storage"])
    good = training_rows().splitlines()
    broken = "\n".join([good[0], "{not json", good[1], '{"messages": [{"role": "user", "content": "hi"}]}']) + "\n"
    refused(upload(api, "faq.jsonl", broken.encode()), 400, "file", "faq.jsonl:2: unparseable", "faq.jsonl:4: no assistant turn")
    refused(upload(api, "empty.jsonl", b""), 400, "file", "empty.jsonl is empty")
    refused(upload(api, "latin.jsonl", good[0].encode() + b"\n\xff\xfe bad\n"), 400, "file", "latin.jsonl:2", "not utf-8")
    big = (training_rows() * 400).encode()  # about 1 MB against max_upload_bytes 200,000
    refused(upload(api, "big.jsonl", big), 400, "file", "max_upload_bytes (200000 bytes)")
    refused(upload(api, "faq.jsonl", training_rows().encode(), purpose="assistants"), 400, "purpose", "'assistants'")
    pairs = preference_rows().splitlines()
    one_sided = json.dumps({k: v for k, v in json.loads(pairs[2]).items() if k != "non_preferred_output"})
    refused(
        upload(api, "pairs.jsonl", "\n".join([*pairs[:2], one_sided, *pairs[3:]]).encode()),
        400,
        "file",
        "not valid preference pairs: pairs.jsonl:3: missing field (no 'non_preferred_output' field",
    )
    assert stored(service["storage"]) == before


def test_bad_jobs_are_refused_and_nothing_is_stored(service):
    api = client(service["url"])
    mine = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    theirs = (
        client(service["url"], "tenant_b")
        .files.create(file=("b.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
        .id
    )
    gone = api.files.create(file=("gone.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    api.files.delete(gone)
    before = stored(service["storage"])
    jobs = api.fine_tuning.jobs

    def create(**kw):
        return lambda: jobs.create(**{"model": "tiny", "training_file": mine, **kw})

    refused(create(model="gpt-4o-mini"), 400, "model", "'gpt-4o-mini'")
    for bad in (0, -1, "lots"):
        refused(create(hyperparameters={"n_epochs": bad}), 400, "hyperparameters.n_epochs")
        hyper = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": bad}}}
        refused(create(method=hyper), 400, "method.supervised.hyperparameters.n_epochs")
    refused(create(hyperparameters={"learning_rate_multiplier": 1e9}), 400, "hyperparameters.learning_rate_multiplier")
    for suffix in ("a/b", "..", "x" * 65):
        refused(create(suffix=suffix), 400, "suffix")
    refused(create(method={"type": "telepathy"}), 400, "method.type")
    refused(create(validation_file=theirs), 400, "validation_file", "does not exist")
    refused(create(training_file=gone), 400, "training_file", "does not exist")
    refused(
        create(extra_body={"rayfit": {"spec": {"train": {"epochz": 2}}}}),
        400,
        "rayfit.spec.train.epochz",
        "did you mean 'epochs'",
    )
    refused(create(extra_body={"rayfit": {"spec": {"output": {"name": "x"}}}}), 400, "rayfit.spec.output", "set by the service")
    refused(
        create(extra_body={"rayfit": {"spec": {"model": {"lora": {"r": 16}}}}}),  # the engine holds ranks up to 8
        400,
        "rayfit.spec.model.lora.r",
        "vllm.max_lora_rank",
    )
    refused(create(method={"type": "dpo"}), 400, "training_file", "supervised examples")
    refused(
        create(extra_body={"rayfit": {"spec": {"model": {"method": "full", "lora": None}}}}),
        400,
        "rayfit.spec.model.method",
        "serve run",
    )
    assert stored(service["storage"]) == before


def test_the_plan_route_resolves_without_creating(service):
    api = client(service["url"])
    mine = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    before = stored(service["storage"])
    body = {
        "model": "tiny",
        "training_file": mine,
        "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2},
    }
    plan = api.post("/rayfit/plan", body=body, cast_to=object)
    assert plan["hyperparameters"]["n_epochs"] == 3 and plan["hyperparameters"]["batch_size"] == 8
    assert plan["spec"]["train"]["learning_rate"] == pytest.approx(6e-3) and plan["spec"]["train"]["max_steps"] is None
    assert plan["plan"]["params"] and "memory" in plan["text"].lower()
    assert stored(service["storage"]) == before


def test_stored_bytes_limit_answers_429(service):
    api = client(service["url"])
    rows = training_rows(n=8)
    chunk = "".join(rows.replace("please", f"please {k} ") for k in range(160)).encode()  # about 180 KB of valid rows
    assert 150_000 < len(chunk) < 200_000
    made = []
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(8):  # tenant_a may keep 1,000,000 bytes
            made.append(upload(api, "chunk.jsonl", chunk)().id)
    assert e.value.body["code"] == "max_stored_bytes" and "max_stored_bytes (1000000)" in e.value.body["message"]
    assert 3 <= len(made) <= 6
    for file_id in made:
        assert api.files.delete(file_id).deleted
