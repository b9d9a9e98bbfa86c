"""Artefacts from storage are trusted only as far as they check out against their manifest, and never as pickles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from cluster.errors import UserError
from cluster.manifest import MANIFEST, check_artefact, read_manifest, refuse_pickle_weights, write_manifest
from cluster.spec import validate_spec
from serve.args import parse_args


def adapter(folder: Path, weights: str = "adapter_model.safetensors") -> Path:
    """A LoRA-checkpoint-shaped folder with its manifest, as training writes it."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tensors = {"base_model.model.layers.0.q_proj.lora_A.weight": rng.standard_normal((8, 64), dtype=np.float32)}
    if weights.endswith(".safetensors"):
        save_file(tensors, str(folder / weights))
    else:
        (folder / weights).write_bytes(b"\x80\x04pickle")  # what torch.save writes starts like this
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (folder / "optimizer.pt").write_bytes(b"\x80\x04state")  # Trainer state: a pickle, but never loaded as weights
    write_manifest(folder, "checkpoint", method="lora")
    return folder


def flip_one_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_changed_byte_is_refused_naming_the_file_and_the_untouched_neighbour_passes(tmp_path):
    good, bad = adapter(tmp_path / "alpha"), adapter(tmp_path / "bravo")
    flip_one_byte(bad / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"bravo does not match its manifest: adapter_model\.safetensors: checksum differs"):
        check_artefact(bad, str(bad))
    assert check_artefact(good, str(good))["method"] == "lora"


def test_missing_added_and_escaping_files_are_refused(tmp_path):
    art = adapter(tmp_path / "a")
    (art / "adapter_config.json").unlink()
    with pytest.raises(UserError, match=r"adapter_config\.json: missing"):
        check_artefact(art, "a")
    art = adapter(tmp_path / "b")
    (art / "modeling_evil.py").write_text("import os\n")  # code added after the manifest, for trust_remote_code
    with pytest.raises(UserError, match=r"modeling_evil\.py: not in the manifest"):
        check_artefact(art, "b")
    art = adapter(tmp_path / "c")
    manifest = json.loads((art / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0", "bytes": 1}
    with pytest.raises(UserError, match=r"\.\./\.\./etc/passwd: outside the folder"):
        check_artefact(art, "c", manifest)


def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    art = adapter(tmp_path / "p", weights="adapter_model.bin")
    with pytest.raises(UserError, match=r"p holds pickle weights \(adapter_model\.bin\).*allow_pickle"):
        check_artefact(art, "p")
    assert check_artefact(art, "p", allow_pickle=True)["kind"] == "checkpoint"
    plain = tmp_path / "plain"  # a plain folder has no manifest to check; pickles are still refused
    plain.mkdir()
    (plain / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match=r"pytorch_model\.bin"):
        refuse_pickle_weights(plain, "plain")
    refuse_pickle_weights(plain, "plain", allow_pickle=True)


def test_a_broken_or_absent_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no manifest.json"):
        read_manifest(str(tmp_path))
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        read_manifest(str(tmp_path))
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a rayfit manifest"):
        check_artefact(tmp_path, "x")


def test_remote_code_is_off_unless_asked():
    spec = validate_spec({"model": {"base": "x"}, "data": {"train": [{"path": "x.jsonl"}]}, "output": {"name": "t"}})
    assert spec.model.trust_remote_code is False
    assert parse_args({"model": "m"}).trust_remote_code is False
