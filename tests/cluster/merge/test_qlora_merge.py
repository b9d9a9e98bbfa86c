"""QLoRA merge: into the dequantized 4-bit base the export reproduces 4-bit base + adapter, even after the
no-grad forward that repacks 4-bit weights on AVX512-BF16 CPUs (docs/platform-notes.md)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.merge import merge_adapter, merge_checkpoint, merged_model
from cluster.merge.quantized import load_dequantized_into
from cluster.model.load import load_quantized_base
from cluster.spec import JobSpec
from tests.cluster.merge.checkpoints import lora_config, sample_ids, save_checkpoint, spec_dict, train_adapter

pytestmark = pytest.mark.slow


def _repacked(model) -> int:
    """Linear4bit layers whose weights a no-grad forward left in the CPU-only packed layout."""
    import bitsandbytes as bnb

    return sum(
        getattr(m.weight.quant_state, "packing_format_for_cpu", False)
        for m in model.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )


@pytest.fixture(scope="module")
def qlora_run(tiny_model_dir, tmp_path_factory):
    """A QLoRA checkpoint trained on the NF4 base; the live 4-bit model + adapter left repacked by a no-grad forward.

    The reference logits come from the forward path training used (grad enabled, unpacked layout). The no-grad
    (packed) path of the same 4-bit model differs from it by a few 1e-3 too: that is the 4-bit kernel's own bf16-level
    noise, reported as `noise` so the merge figures can be read against it.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    run = tmp_path_factory.mktemp("runs") / "qlora-run"
    # compute_dtype float32, as a float32 CPU run would use; bfloat16 adds ~1e-3 of kernel noise (docs/benchmarks.md)
    spec = spec_dict(tiny_model_dir, "qlora", name="qlora-run", quantization={"compute_dtype": "float32"})
    quantized = load_quantized_base(JobSpec.model_validate(spec), torch.float32)
    model = get_peft_model(prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False), lora_config(spec))
    losses = train_adapter(model, lr=2e-3)
    ckpt = save_checkpoint(
        model,
        AutoTokenizer.from_pretrained(tiny_model_dir),
        run / "checkpoint_00000006",
        spec,
        step=6,
        extra={"quantization": spec["model"]["quantization"]},
    )
    ids = sample_ids(model.config.vocab_size, seed=7).to(model.device)  # the model is on a GPU when there is one
    expected = model(input_ids=ids).logits.detach().float()  # grad enabled: the layout and kernel training used
    with torch.no_grad():  # the forward that repacks 4-bit weights on AVX512-BF16 CPUs
        noise = (model(input_ids=ids).logits.float() - expected).abs().max().item()
    ids, expected = ids.cpu(), expected.cpu()
    return {
        "run": run,
        "ckpt": ckpt,
        "spec": spec,
        "model": model,
        "ids": ids,
        "expected": expected,
        "losses": losses,
        "noise": noise,
    }


def _max_diff(export: str, run: dict) -> float:
    merged = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    with torch.no_grad():
        return (merged(input_ids=run["ids"]).logits - run["expected"]).abs().max().item()


def test_dequantized_weights_are_right_after_a_no_grad_forward(qlora_run, tiny_model_dir):
    """Merging from the live 4-bit model that just ran a no-grad forward must still reproduce it."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    model = qlora_run["model"]
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    if layer.weight.device.type == "cpu" and layer.support_avx512bf16_for_cpu:  # the trap is real here: walk into it
        assert _repacked(model) == 14
        try:
            naive = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        except Exception:  # noqa: BLE001 - an error is as unusable as garbage
            naive = None
        layer.state_dict()
        right = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        assert naive is None or naive.shape != right.shape or (naive - right).abs().max() > 0.1
        with torch.no_grad():  # repack it again, so the merge below starts from the trapped layout
            model(input_ids=qlora_run["ids"].to(model.device))
        assert _repacked(model) == 14
    fp = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert load_dequantized_into(fp, model, torch.float32) == 2 * 7  # q, k, v, o, gate, up, down in 2 layers
    merged = merge_adapter(fp, qlora_run["ckpt"])
    with torch.no_grad():
        diff = (merged(input_ids=qlora_run["ids"]).logits - qlora_run["expected"]).abs().max().item()
    assert diff <= 5e-3, f"merge after a no-grad forward is off by {diff} (4-bit layout trap)"


def test_default_export_reproduces_the_4bit_model_and_original_does_not(qlora_run, tmp_path):
    assert qlora_run["losses"][-1] < qlora_run["losses"][0]
    default = merge_checkpoint(str(qlora_run["run"]))
    original = merge_checkpoint(str(qlora_run["run"]), into="original", out_uri=str(tmp_path / "original"))
    d_default, d_original = _max_diff(default, qlora_run), _max_diff(original, qlora_run)
    print(
        f"\nQLoRA max abs logit diff vs 4-bit base + adapter: dequantized {d_default:.4f}, original {d_original:.4f}, "
        f"4-bit model's own no-grad vs grad path {qlora_run['noise']:.4f}"
    )
    assert d_default <= 5e-3
    assert d_original > 10 * d_default  # quantization error the adapter was trained to live with
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (qlora_run["run"] / "export", tmp_path / "original")]
    assert [m["merged_into"] for m in manifests] == ["dequantized", "original"]
    assert manifests[0]["quantization"] == {"compute_dtype": "float32"}  # carried over from the checkpoint


def test_streaming_export_equals_the_in_memory_dequantized_merge(qlora_run, tmp_path, monkeypatch):
    """The streaming merge quantizes each weight on its own; the export must equal merging into the whole 4-bit base."""
    with monkeypatch.context() as m:
        m.setattr("cluster.merge.export.merged_model", lambda *a: pytest.fail("merged in memory, not streaming"))
        export = merge_checkpoint(str(qlora_run["ckpt"]), out_uri=str(tmp_path / "streamed"))
    in_memory = merged_model(qlora_run["ckpt"], JobSpec.model_validate(qlora_run["spec"]), "dequantized")
    streamed = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    want = in_memory.state_dict()
    for name, tensor in streamed.state_dict().items():
        assert torch.equal(tensor, want[name]), name  # bit for bit: same quantization, same merge arithmetic
    with torch.no_grad():
        diff = (streamed(input_ids=qlora_run["ids"]).logits - in_memory(input_ids=qlora_run["ids"]).logits).abs().max()
    assert diff.item() == 0.0
