"""A pinned `model.revision` reaches every load of the base: merge (LoRA, QLoRA streaming and in memory) and evaluation.

The base is a hub id served from a local hub cache (offline), holding two revisions of the same repository: `main`
and `pinned`, with different weights and chat templates. Every loader is asked for `pinned`; a load that dropped the
revision would silently get `main` (what the QLoRA merge did before). This proves the revision reaches the hub
resolution of every load in cluster.model.load; it does not prove anything about a real hub's network path.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from cluster.merge import merge_checkpoint, merged_model
from cluster.model import load
from cluster.spec import JobSpec
from tests.cluster.merge.checkpoints import lora_config, save_checkpoint, spec_dict

REPO_ID = "rayfit-test/tiny"
REVISIONS = {"main": "a" * 40, "pinned": "b" * 40}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_model_dir):
    """A hub cache with REPO_ID at two revisions: `pinned` has other weights (seed 1) and a marked chat template."""
    from tests.tiny_model import build_tiny_model

    cache = tmp_path_factory.mktemp("hub")
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / REVISIONS["main"])
    pinned = build_tiny_model(repo / "snapshots" / REVISIONS["pinned"], seed=1)
    template = pinned / "chat_template.jinja"
    template.write_text("{# pinned #}" + template.read_text())
    for name, key, value in (("config.json", "rayfit_revision", "pinned"), ("generation_config.json", "max_new_tokens", 77)):
        data = json.loads((pinned / name).read_text())
        (pinned / name).write_text(json.dumps({**data, key: value}))
    (repo / "refs").mkdir()
    for name, sha in REVISIONS.items():
        (repo / "refs" / name).write_text(sha)
    return {"cache": cache, "main": repo / "snapshots" / REVISIONS["main"], "pinned": pinned}


@pytest.fixture
def offline_hub(hub, monkeypatch):
    """huggingface_hub and transformers read the cache folder from this constant at call time."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub["cache"]))
    return hub


def _spec(method: str, tmp_path, **model) -> dict:
    spec = spec_dict(tmp_path / "base-unused", method, name="rev-run", revision="pinned", **model)
    spec["model"]["base"] = REPO_ID
    spec["output"]["storage"] = str(tmp_path)
    return spec


def _checkpoint(hub: dict, spec: dict, tmp_path) -> str:
    """A LoRA adapter with random (non-zero) weights on the pinned base, saved as a checkpoint with its manifest."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = lora_config(spec)
    config.init_lora_weights = False  # B != 0, so the merge changes every adapted weight
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(hub["pinned"], dtype=torch.float32), config)
    extra = {"quantization": spec["model"]["quantization"]} if spec["model"]["method"] == "qlora" else None
    ckpt = tmp_path / "rev-run" / "checkpoint_00000001"
    save_checkpoint(model, AutoTokenizer.from_pretrained(hub["pinned"]), ckpt, spec, step=1, extra=extra)
    return str(ckpt)


def _weights(folder) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_every_loader_gets_the_pinned_revision(offline_hub, tmp_path):
    spec = JobSpec.model_validate(_spec("qlora", tmp_path, quantization={"compute_dtype": "float32"}))
    pinned, main = _weights(offline_hub["pinned"]), _weights(offline_hub["main"])
    embed = "model.embed_tokens.weight"
    assert not torch.equal(pinned[embed], main[embed])  # the two revisions really differ

    assert torch.equal(load.load_base(spec, torch.float32).state_dict()[embed], pinned[embed])
    assert torch.equal(load.load_quantized_base(spec, torch.float32).state_dict()[embed], pinned[embed])
    assert load.base_weight_files(spec)[0].parent.name == REVISIONS["pinned"]
    assert load.load_base_config(spec).rayfit_revision == "pinned"
    assert load.load_base_generation_config(spec).max_new_tokens == 77
    assert load.load_tokenizer(spec).chat_template.startswith("{# pinned #}")
    model = load.load_model(spec)  # training's loader, QLoRA
    assert torch.equal(model.state_dict()["base_model.model." + embed], pinned[embed])


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_merge_uses_the_pinned_revision(offline_hub, tmp_path, method):
    """The streaming export and the in-memory merge both start from the pinned base (they agree with each other and
    not with a merge into `main`)."""
    model = {"quantization": {"compute_dtype": "float32"}} if method == "qlora" else {}
    spec = _spec(method, tmp_path, **model)
    ckpt = _checkpoint(offline_hub, spec, tmp_path)
    export = merge_checkpoint(ckpt)
    got = _weights(tmp_path / "rev-run" / "export")
    in_memory = merged_model(tmp_path / "rev-run" / "checkpoint_00000001", JobSpec.model_validate(spec)).state_dict()
    main_spec = JobSpec.model_validate({**spec, "model": {**spec["model"], "revision": "main"}})
    into_main = merged_model(tmp_path / "rev-run" / "checkpoint_00000001", main_spec).state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"):
        assert torch.equal(got[name], in_memory[name]), name
        assert not torch.allclose(got[name], into_main[name]), name
    folder = tmp_path / "rev-run" / "export"
    assert json.loads((folder / "config.json").read_text())["rayfit_revision"] == "pinned"
    assert json.loads((folder / "generation_config.json").read_text())["max_new_tokens"] == 77
    assert json.loads((folder / "manifest.json").read_text())["spec"]["model"]["revision"] == "pinned"
    assert export.endswith("export")
