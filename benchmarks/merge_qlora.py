"""How closely a QLoRA export reproduces the trained 4-bit model, merged into the dequantized base vs the original.

    .venv/bin/python benchmarks/merge_qlora.py [--model tiny|smollm2] [--seeds 5] [--compute-dtype float32]

For each seed: train a LoRA adapter a few steps on the NF4 base, run a no-grad forward (the 4-bit layout trap),
merge both ways with cluster.merge, and compare logits with the 4-bit model + adapter (grad-enabled forward, the
path training used). Prints one JSON line per seed; writes the seeds and medians to
benchmarks/results/merge_qlora-MODEL-INPUTS-DTYPE.json (table `merge`, which docs/benchmarks.md quotes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def faq_ids(base: Path, seed: int, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of real FAQ text to train on and two others to compare logits on."""
    import json
    import random

    from transformers import AutoTokenizer

    from cluster.embedded import embedded_data_path

    tok = AutoTokenizer.from_pretrained(base)
    rows = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")]
    picked = random.Random(seed).sample(rows, 4)
    ids = [tok(r["instruction"] + " " + r["output"], add_special_tokens=False)["input_ids"][:length] for r in picked]
    width = min(len(i) for i in ids)
    batch = torch.tensor([i[:width] for i in ids])
    return batch[:2], batch[2:]


def one_seed(base: Path, seed: int, compute_dtype: str, steps: int, length: int, inputs: str) -> dict:
    """Train, merge both ways, and measure for one seed."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from cluster.merge import merge_adapter
    from cluster.merge.quantized import load_dequantized_into
    from cluster.model.load import load_quantized_base
    from cluster.spec import JobSpec
    from tests.cluster.merge.checkpoints import lora_config, sample_ids, spec_dict, train_adapter

    spec = spec_dict(base, "qlora", quantization={"compute_dtype": compute_dtype})
    torch.manual_seed(seed)
    quantized = load_quantized_base(JobSpec.model_validate(spec), torch.float32)
    model = get_peft_model(prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False), lora_config(spec))
    if inputs == "faq":
        train_ids, ids = faq_ids(base, seed, length)
        train_adapter(model, steps=steps, lr=2e-3, ids=train_ids)
    else:
        train_adapter(model, steps=steps, lr=2e-3)
        ids = sample_ids(model.config.vocab_size, seed=100 + seed, length=length)
    ref = model(input_ids=ids).logits.detach().float()
    with torch.no_grad():
        noise = (model(input_ids=ids).logits.float() - ref).abs().max().item()  # also repacks the 4-bit weights
    out = {"seed": seed, "fourbit_own_noise": noise}
    with tempfile.TemporaryDirectory() as adapter:
        model.save_pretrained(adapter)
        for into in ("dequantized", "original"):
            started = time.perf_counter()
            fp = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            if into == "dequantized":
                load_dequantized_into(fp, model, torch.float32)
            merged = merge_adapter(fp, Path(adapter))
            seconds = time.perf_counter() - started
            with torch.no_grad():
                logits = merged(input_ids=ids).logits
            diff = (logits - ref).abs()
            out[into] = {
                "max_abs": diff.max().item(),
                "mean_abs": diff.mean().item(),
                "top1_agree": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                "merge_s": round(seconds, 2),
            }
    return out


def main() -> None:
    """Run the seeds and print per-seed results and medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--inputs", choices=["random", "faq"], default="random", help="token ids to train and compare on")
    args = p.parse_args()
    if args.model == "tiny":
        from tests.tiny_model import build_tiny_model

        base = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    else:
        from cluster.embedded import embedded_model_dir

        base = embedded_model_dir()
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(base, seed, args.compute_dtype, args.steps, length=32, inputs=args.inputs))
        print(json.dumps(rows[-1]), flush=True)
    med = {
        f"{into}_{k}": statistics.median(r[into][k] for r in rows)
        for into in ("dequantized", "original")
        for k in ("max_abs", "mean_abs", "top1_agree", "merge_s")
    }
    med["fourbit_own_noise"] = statistics.median(r["fourbit_own_noise"] for r in rows)
    from benchmarks.results import table, write_results

    header = ["model, inputs, 4-bit compute dtype", "seeds", "max abs logit diff: dequantized (default)", "max abs: original"]
    header += ["mean abs: dequantized / original", "top-1 token agreement: dequantized / original", "4-bit own noise"]
    row = [f"{args.model}, {args.inputs} ids, {args.compute_dtype}", args.seeds, f"{med['dequantized_max_abs']:.2g}"]
    row += [f"{med['original_max_abs']:.3f}", f"{med['dequantized_mean_abs']:.2g} / {med['original_mean_abs']:.3f}"]
    row += [f"{med['dequantized_top1_agree']:.0%} / {med['original_top1_agree']:.0%}", f"{med['fourbit_own_noise']:.2g}"]
    write_results(
        f"merge_qlora-{args.model}-{args.inputs}-{args.compute_dtype}",
        runs=rows,
        summary={"model": args.model, "inputs": args.inputs, "compute_dtype": args.compute_dtype, "median": med},
        tables={"merge": table(header, [row])},
    )


if __name__ == "__main__":
    main()
