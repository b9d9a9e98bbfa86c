"""`make demo`: the whole rayfit path on the embedded model and data, on this machine.

Validates the demo spec, loads the embedded model and data, and answers one prompt. Later stages (fine-tune,
merge, evaluate, serve) join as they land.
"""

from __future__ import annotations

import sys

from cluster.embedded import embedded_data_path
from cluster.model.source import resolve_base
from cluster.spec import load_spec

SPEC = "jobs/specs/demo-cpu.yaml"
PROMPT = "What is a bygglov?"


def main() -> int:
    """Run the demo end to end and print what each step produced."""
    spec = load_spec(SPEC)
    print(f"[demo] spec {SPEC} is valid: {spec.model.method} of {spec.model.base} on {spec.data.train[0].path}")
    data = embedded_data_path(spec.data.train[0].path.removeprefix("embedded:"))
    print(f"[demo] embedded data: {sum(1 for _ in open(data, encoding='utf-8'))} rows in {data}")
    model_dir = resolve_base(spec.model.base)
    print(f"[demo] embedded model converted to {model_dir}")
    print(f"[demo] Q: {PROMPT}\n[demo] A: {answer(model_dir, PROMPT)}")
    return 0


def answer(model_dir: str, prompt: str, max_new_tokens: int = 64) -> str:
    """Greedy answer of a local checkpoint to one chat prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


if __name__ == "__main__":
    sys.exit(main())
