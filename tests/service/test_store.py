"""The service's store on a folder and on S3 (moto's server), and how OpenAI hyperparameters resolve into a spec."""

from __future__ import annotations

import pytest

from cluster.service import jobs, names, published
from cluster.service.job_request import BadRequest, parse_request, resolve_spec
from cluster.service.store import Store
from tests.service.conftest import TEMPLATE


def exercise(store: Store, tmp_path) -> None:
    store.put("records/jobs/ftjob-1.json", {"id": "ftjob-1", "tenant": "a", "created_at": 1})
    store.put("records/jobs/ftjob-2.json", {"id": "ftjob-2", "tenant": "b", "created_at": 2})
    assert store.get("records/jobs/ftjob-1.json")["tenant"] == "a" and store.get("records/jobs/nope.json") is None
    assert store.names("records/jobs") == ["ftjob-1", "ftjob-2"]
    assert [r["id"] for r in jobs.tenant_jobs(store, "a")] == ["ftjob-1"]
    local = tmp_path / "upload.jsonl"
    local.write_bytes(b'{"x": 1}\n')
    store.put_file(local, "blobs/file-1.jsonl")
    with store.open("blobs/file-1.jsonl") as f:
        assert f.read() == b'{"x": 1}\n'
    first = jobs.add_event(store, "ftjob-1", "one")
    second = jobs.add_event(store, "ftjob-1", "two", type="metrics", data={"step": 5, "eta_s": 10})
    page, more = jobs.events(store, "ftjob-1", None, 1)
    assert [e["id"] for e in page] == [second["id"]] and more  # newest first
    assert [e["id"] for e in jobs.events(store, "ftjob-1", second["id"], 10)[0]] == [first["id"]]
    assert jobs.latest_metrics(store, "ftjob-1")["step"] == 5
    model = names.model_name("tiny", "faq", "ftjob-1")
    published.publish(store, model, "s3://x/ckpt", "tiny", "a", "ftjob-1")
    jobs.add_checkpoint(store, "ftjob-1", {"step": 30, "uri": "s3://x/c30", "created_at": 1, "fine_tuned_model_checkpoint": ""})
    assert published.lookup(store, model, "b") is None and published.lookup(store, model, "a")["uri"] == "s3://x/ckpt"
    assert published.adapter_uri(store, names.checkpoint_name(model, 30)) == "s3://x/c30"
    alias = published.point_alias(store, "a", "bot", model)
    alias = published.point_alias(store, "a", "bot", names.checkpoint_name(model, 30))
    assert alias["previous"] == model
    store.delete("blobs/file-1.jsonl")
    assert not store.exists("blobs/file-1.jsonl")


def test_store_on_a_folder(tmp_path):
    store = Store(str(tmp_path / "svc"))
    exercise(store, tmp_path)
    leftovers = [p.name for p in (tmp_path / "svc").rglob(".*")]  # temporary files of atomic writes are renamed away
    assert leftovers == []


def test_store_in_object_storage(object_store, tmp_path):
    exercise(Store(object_store("svc") + "/root"), tmp_path)


def test_hyperparameters_resolve_into_the_template(tmp_path):
    body = {
        "model": "tiny",
        "training_file": "file-1",
        "seed": 3,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}},
        },
    }
    spec, hyper = resolve_spec(parse_request(body), TEMPLATE, str(tmp_path), "/data/train.jsonl", None, ("/runs", "ftjob-1"))
    assert spec["train"]["epochs"] == 2 and spec["train"]["max_steps"] is None
    assert spec["train"]["gradient_accumulation_steps"] == 2  # 8 examples = 1 worker x micro-batch 4 x 2
    assert spec["train"]["learning_rate"] == pytest.approx(1.5e-3) and spec["train"]["seed"] == 3
    assert spec["data"]["train"] == [{"path": "/data/train.jsonl"}] and spec["merge"]["enabled"] is False
    assert hyper == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5, "seed": 3, "max_steps": None}
    with pytest.raises(BadRequest, match="lora_alpha|unknown key") as e:
        resolve_spec(
            parse_request({**body, "rayfit": {"spec": {"model": {"lora": {"lora_alpha": 3}}}}}),
            TEMPLATE,
            str(tmp_path),
            "/d.jsonl",
            None,
            ("/runs", "x"),
        )
    assert e.value.param == "rayfit.spec.model.lora.lora_alpha"


def test_a_lora_rank_the_engine_cannot_serve_is_refused_naming_the_field(tmp_path):
    body = {"model": "tiny", "training_file": "file-1", "rayfit": {"spec": {"model": {"lora": {"r": 16}}}}}
    args = (TEMPLATE, str(tmp_path), "/d.jsonl", None, ("/runs", "x"))
    with pytest.raises(BadRequest, match=r"model.lora.r 16 is above .* \(8, its vllm.max_lora_rank\)") as e:
        resolve_spec(parse_request(body), *args, max_lora_rank=8)
    assert e.value.param == "rayfit.spec.model.lora.r"
    assert resolve_spec(parse_request(body), *args, max_lora_rank=16)[0]["model"]["lora"]["r"] == 16


def test_dpo_resolves_beta_and_the_objective(tmp_path):
    body = {"model": "tiny", "training_file": "file-1", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}}}
    spec, hyper = resolve_spec(parse_request(body), TEMPLATE, str(tmp_path), "/d.jsonl", None, ("/runs", "x"))
    assert spec["train"]["objective"] == "dpo" and spec["train"]["dpo"]["beta"] == 0.3 and hyper["beta"] == 0.3


def test_the_upload_check_reads_sft_and_dpo_files_and_names_bad_lines(tmp_path):
    import json

    from cluster.service.files import BadFile, check_upload
    from tests.service.conftest import preference_rows, training_rows

    sft, dpo = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    sft.write_text(training_rows())
    dpo.write_text(preference_rows())
    assert check_upload(sft, "sft.jsonl") == (8, "sft")
    assert check_upload(dpo, "dpo.jsonl") == (8, "dpo")
    rows = preference_rows().splitlines()
    half = {k: v for k, v in json.loads(rows[1]).items() if k != "non_preferred_output"}
    dpo.write_text("\n".join([rows[0], json.dumps(half), "{oops", *rows[3:]]) + "\n")
    with pytest.raises(
        BadFile, match=r"2 of 8 lines are not valid preference pairs: dpo.jsonl:2: missing field .*dpo.jsonl:3: unparseable"
    ):
        check_upload(dpo, "dpo.jsonl")


def test_the_upload_check_tags_rft_prompts_and_names_bad_lines(tmp_path):
    import json

    from cluster.service.files import BadFile, check_upload
    from tests.service.conftest import training_rows

    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 2?"}], "answer": str(i + 2)} for i in range(6)]
    rft = tmp_path / "rft.jsonl"
    rft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_upload(rft, "rft.jsonl") == (6, "prompts")
    sft = tmp_path / "sft.jsonl"  # conversations that end with the answer stay supervised examples
    sft.write_text(training_rows())
    assert check_upload(sft, "sft.jsonl") == (8, "sft")
    no_question = {"messages": [{"role": "system", "content": "Add."}], "answer": "4"}
    rft.write_text("\n".join([json.dumps(rows[0]), "{oops", *map(json.dumps, rows[2:4]), json.dumps(no_question)]) + "\n")
    with pytest.raises(
        BadFile, match=r"2 of 5 lines are not valid prompts: rft.jsonl:2: unparseable .*rft.jsonl:5: wrong role order"
    ):
        check_upload(rft, "rft.jsonl")
