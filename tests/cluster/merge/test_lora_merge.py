"""LoRA merge: the export reproduces base + adapter, describes itself, and is reused when it already matches."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.errors import UserError
from cluster.manifest import verify
from cluster.merge import find_checkpoint, merge_checkpoint, merged_model
from cluster.spec import JobSpec
from tests.cluster.merge.checkpoints import lora_config, sample_ids, save_checkpoint, spec_dict, train_adapter


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A run folder with one LoRA checkpoint, and the trained base + adapter logits it must reproduce."""
    from peft import get_peft_model

    run = tmp_path_factory.mktemp("runs") / "lora-run"
    spec = {**spec_dict(tiny_model_dir, "lora", name="lora-run"), "merge": {"max_shard_size": "1MB"}}  # ~2 MB model
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), lora_config(spec))
    losses = train_adapter(model)
    ids = sample_ids(model.config.vocab_size, seed=7)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    ckpt = save_checkpoint(model, AutoTokenizer.from_pretrained(tiny_model_dir), run / "checkpoint_00000006", spec, step=6)
    return {"run": run, "ckpt": ckpt, "ids": ids, "expected": expected, "losses": losses}


def test_lora_export_logits_match_base_plus_adapter(lora_run):
    assert lora_run["losses"][-1] < lora_run["losses"][0]  # the adapter really moved
    export = merge_checkpoint(str(lora_run["ckpt"]))
    assert export == str(lora_run["run"] / "export")
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    assert not any("lora" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        got = model(input_ids=lora_run["ids"]).logits
    assert (got - lora_run["expected"]).abs().max().item() <= 1e-4


def test_streaming_export_equals_the_in_memory_merge(lora_run, tmp_path, monkeypatch):
    """The export is written tensor by tensor from the base's files; PEFT's merge of the whole model must agree."""
    spec = JobSpec.model_validate(json.loads((lora_run["ckpt"] / "manifest.json").read_text())["spec"])
    in_memory = merged_model(lora_run["ckpt"], spec)
    monkeypatch.setattr("cluster.merge.export.merged_model", lambda *a: pytest.fail("merged in memory, not streaming"))
    streamed = AutoModelForCausalLM.from_pretrained(
        merge_checkpoint(str(lora_run["ckpt"]), out_uri=str(tmp_path / "s")), dtype=torch.float32
    )
    want = in_memory.state_dict()
    assert set(streamed.state_dict()) == set(want)
    for name, tensor in streamed.state_dict().items():
        assert (tensor - want[name]).abs().max().item() <= 1e-6, name
    with torch.no_grad():
        diff = (streamed(input_ids=lora_run["ids"]).logits - in_memory(input_ids=lora_run["ids"]).logits).abs().max()
    assert diff.item() <= 1e-5


def test_export_describes_itself(lora_run):
    export = lora_run["run"] / "export"
    merge_checkpoint(str(lora_run["ckpt"]))
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["kind"] == "export" and manifest["method"] == "lora" and manifest["step"] == 6
    assert manifest["source_checkpoint"] == str(lora_run["ckpt"]) and manifest["merged_into"] is None
    assert {
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
    } <= set(manifest["files"])
    assert verify(export, manifest) == []
    umask = os.umask(0)
    os.umask(umask)
    assert export.stat().st_mode & 0o777 == 0o777 & ~umask  # not the owner-only mode of a temporary folder
    assert (export / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask
    tok = AutoTokenizer.from_pretrained(export)
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_merge_is_idempotent_and_rebuilds_a_damaged_export(lora_run):
    export = lora_run["run"] / "export"
    merge_checkpoint(str(lora_run["run"]))  # the run folder resolves to its newest complete checkpoint
    before = (export / "manifest.json").stat().st_mtime_ns
    merge_checkpoint(str(lora_run["run"]))
    assert (export / "manifest.json").stat().st_mtime_ns == before  # reused, not rewritten
    next(export.glob("model-*.safetensors")).write_bytes(b"damaged")
    merge_checkpoint(str(lora_run["run"]))
    assert verify(export) == []


def test_export_is_sharded_by_the_spec_and_goes_where_asked(lora_run, tmp_path):
    out = merge_checkpoint(str(lora_run["ckpt"]), out_uri=str(tmp_path / "sharded"))
    assert out == str(tmp_path / "sharded")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size <= 1_100_000 for p in shards)
    assert not list(tmp_path.glob(".export-*"))  # the temporary folder was moved into place


def test_incomplete_and_wrong_inputs_name_the_problem(lora_run, tmp_path):
    incomplete = tmp_path / "run" / "checkpoint_00000011"
    incomplete.mkdir(parents=True)
    with pytest.raises(UserError, match="no complete checkpoint"):
        merge_checkpoint(str(tmp_path / "run"))
    # an incomplete newer checkpoint is skipped in favour of the newest complete one
    shutil.copytree(lora_run["ckpt"], tmp_path / "run" / "checkpoint_00000010")
    assert find_checkpoint(str(tmp_path / "run"))[0].endswith("checkpoint_00000010")
    with pytest.raises(UserError, match="--into 'fused'"):
        merge_checkpoint(str(lora_run["ckpt"]), into="fused")
    damaged = tmp_path / "damaged"
    shutil.copytree(lora_run["ckpt"], damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="does not match its manifest"):
        merge_checkpoint(str(damaged), out_uri=str(tmp_path / "out"))


def test_one_changed_byte_is_refused_by_merge_and_evaluate_naming_the_file(lora_run, tmp_path):
    """Tampering: one byte of the adapter (or of an export's weights) changed, the size unchanged."""
    from cluster.evaluation import load_tuned

    tampered = tmp_path / "run" / "checkpoint_00000006"
    shutil.copytree(lora_run["ckpt"], tampered)
    weights = tampered / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"does not match its manifest: adapter_model\.safetensors: checksum differs"):
        merge_checkpoint(str(tampered), out_uri=str(tmp_path / "out"))
    spec = JobSpec.model_validate(json.loads((tampered / "manifest.json").read_text())["spec"])
    with pytest.raises(UserError, match=r"adapter_model\.safetensors: checksum differs"):
        load_tuned(str(tampered), spec)
    export = tmp_path / "export"
    merge_checkpoint(str(lora_run["ckpt"]), out_uri=str(export))
    shard = sorted(export.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"export {export} does not match its manifest: {shard.name}: checksum differs"):
        load_tuned(str(export), spec)


@pytest.mark.slow
def test_merge_from_and_to_object_storage(lora_run, tmp_path, monkeypatch, object_store):
    """A run folder in object storage (moto S3, GCS emulator): the export lands next to it, manifest last, and is
    reused the second time."""
    from cluster import storage

    root = object_store("runs")
    storage.upload_dir(lora_run["ckpt"], f"{root}/lora-run/{lora_run['ckpt'].name}")

    export = merge_checkpoint(f"{root}/lora-run")
    assert export == f"{root}/lora-run/export"
    manifest = json.loads(storage.read_text(export + "/manifest.json"))
    assert manifest["source_checkpoint"] == f"{root}/lora-run/{lora_run['ckpt'].name}"
    local = storage.download_dir(export, tmp_path / "export")
    assert verify(local, manifest) == []
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32)(input_ids=lora_run["ids"]).logits
    assert (got - lora_run["expected"]).abs().max().item() <= 1e-4
    monkeypatch.setattr("cluster.merge.export.merged_model", lambda *a: pytest.fail("merged again instead of reusing"))
    assert merge_checkpoint(f"{root}/lora-run") == export
