"""Finding adapters by name: listed ones, sub-folders of adapter_root, and the newest complete checkpoint of a run."""

from __future__ import annotations

import json

import pytest

from cluster.errors import UserError
from cluster.manifest import write_manifest
from serve.adapters import adapter_dir, adapter_uri, resolve_model, root_names
from serve.args import parse_args


def _lora_folder(path, method="lora", kind="checkpoint", manifest=True, metrics=None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    if manifest:
        write_manifest(path, kind, spec={}, base_model="b", method=method, metrics=metrics or {})
    return path


def test_adapter_root_finds_plain_folders_and_the_best_complete_checkpoint(tmp_path):
    root = tmp_path / "root"
    _lora_folder(root / "plain", manifest=False)
    best = _lora_folder(root / "run" / "checkpoint_00000010", metrics={"eval_loss": 1.5})
    _lora_folder(root / "run" / "checkpoint_00000020", metrics={"eval_loss": 2.0})  # newer, but worse
    (root / "run" / "checkpoint_00000030").mkdir()  # still being written: no manifest yet
    args = parse_args({"model": "m", "adapters": {"listed": str(tmp_path / "x")}, "adapter_root": str(root)})
    assert adapter_uri(args, "listed") == str(tmp_path / "x")
    assert adapter_uri(args, "plain") == f"{root}/plain"
    assert adapter_uri(args, "run") == f"{root}/run/checkpoint_00000010"
    assert adapter_dir(adapter_uri(args, "run")) == best
    assert adapter_uri(args, "missing") is None and adapter_uri(args, "../etc") is None
    assert root_names(args) == ["plain", "run"]


def test_what_is_not_a_lora_adapter_is_refused_with_the_fix(tmp_path):
    with pytest.raises(UserError, match="has neither manifest.json nor adapter_config.json"):
        adapter_dir(str(tmp_path))
    export = _lora_folder(tmp_path / "export", method="lora", kind="export")
    with pytest.raises(UserError, match=r"is not a LoRA checkpoint \(manifest kind=export, method=lora\)"):
        adapter_dir(str(export))
    lora = _lora_folder(tmp_path / "ckpt")
    with pytest.raises(UserError, match=r"is a lora adapter checkpoint, not a full model. Fix: set model to its base \('b'\)"):
        resolve_model(str(lora))


def test_a_tampered_adapter_is_refused_naming_the_file_and_its_neighbour_still_serves(tmp_path):
    root = tmp_path / "root"
    for name in ("alpha", "bravo"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)))
        write_manifest(folder, "checkpoint", spec={}, base_model="b", method="lora", metrics={})
    weights = root / "bravo" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01  # one byte, same size
    weights.write_bytes(bytes(data))
    args = parse_args({"model": "m", "adapter_root": str(root)})
    assert adapter_dir(adapter_uri(args, "alpha")) == root / "alpha"
    with pytest.raises(
        UserError, match=r"adapter .*bravo does not match its manifest: adapter_model\.safetensors: checksum differs"
    ):
        adapter_dir(adapter_uri(args, "bravo"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (plain / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match=r"holds pickle weights \(adapter_model\.bin\)"):
        adapter_dir(str(plain))


def test_an_adapter_in_object_storage_is_downloaded_checked_and_served_from_a_local_copy(tmp_path, object_store):
    """adapter_dir with an s3:// URI (moto S3 server) and a gs:// URI (GCS emulator): the local copy holds the same
    bytes; a tampered object in the bucket is refused naming the file."""
    import fsspec

    root = object_store("adapters")
    for name in ("good", "bad"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
        write_manifest(folder, "checkpoint", spec={}, base_model="b", method="lora", metrics={})
        for f in folder.iterdir():
            body = f.read_bytes()
            if name == "bad" and f.name == "adapter_model.safetensors":
                body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
            with fsspec.open(f"{root}/runs/{name}/{f.name}", "wb") as out:
                out.write(body)

    local = adapter_dir(f"{root}/runs/good")
    assert local.is_dir() and not str(local).startswith(root.split(":")[0] + ":")
    for f in (tmp_path / "good").iterdir():
        assert (local / f.name).read_bytes() == f.read_bytes(), f.name
    with pytest.raises(UserError, match=rf"adapter {root}/runs/bad.*adapter_model\.safetensors"):
        adapter_dir(f"{root}/runs/bad")
