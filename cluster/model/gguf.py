"""Converting a GGUF file (how the embedded model ships) into a transformers checkpoint folder."""

from __future__ import annotations

from pathlib import Path


def convert_gguf(src: Path, out: Path) -> None:
    """Dequantize the GGUF model at `src` and save it, with its tokenizer, as a bf16 transformers folder in `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # Without dequantize=True the GGUF model can be neither saved nor trained (see docs/platform-notes.md).
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, quantization_config=GgufConfig(dequantize=True), dtype="bfloat16"
    )
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
