"""The benchmark's one table: throughput, MFU, peak against predicted memory, losses, and the 4-bit merge check."""

from __future__ import annotations

GiB, MiB = 1024**3, 1024**2


def peak_flops(device: str) -> float | None:
    """Dense bf16 peak of the GPU from the planner's table; None on a CPU or an unknown GPU."""
    from cluster.planner.gpus import find_gpu, known_gpu

    return find_gpu(device).bf16_flops if known_gpu(device) else None


def format_table(results: list[dict], device: str, flops: dict[str, float], on_gpu: bool) -> str:
    """A Markdown table, one row per case, grouped by method, with the baseline's tokens/s as the reference."""
    peak = peak_flops(device) if on_gpu else None
    base = {r["method"]: r.get("tokens_per_s") for r in results if r.get("kind") == "baseline"}
    unit, size = ("GiB", GiB) if on_gpu else ("MiB", MiB)
    lines = [
        f"Device: {device}",
        "",
        (
            f"| case | shape | tokens/s | × baseline | MFU | s/step | tokens/step | peak {unit} | planner {unit} | "
            "planner/peak | loss step 1 | loss last | note |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    merge = []
    for r in sorted(results, key=lambda r: ("lora", "qlora", "full").index(r.get("method", "lora"))):
        if r.get("kind") == "merge":
            merge.append(r)
            continue
        note = r.get("refused") or r.get("error") or r.get("skipped") or ""
        rate = r.get("tokens_per_s")
        ref = base.get(r.get("method"))
        mfu = rate * flops[r["method"]] / peak if rate and peak else None
        peak_b, pred = r.get("peak_bytes"), r.get("predicted_bytes")
        if r.get("optim"):
            note = note or f"TRL defaults: batch {r.get('batch_size')}, {r['optim']}, padded"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r.get("shape", ""),
                    _num(rate, "{:,.0f}"),
                    _num(rate / ref if rate and ref else None, "{:.2f}"),
                    _num(mfu, "{:.1%}"),
                    _num(r.get("step_s"), "{:.3f}"),
                    _num(r.get("tokens_per_step"), "{:,.0f}"),
                    _num(peak_b / size if peak_b else None, "{:.2f}"),
                    _num(pred / size if pred else None, "{:.2f}"),
                    _num(pred / peak_b if pred and peak_b else None, "{:.2f}"),
                    _num(r.get("loss_first"), "{:.4f}"),
                    _num(r.get("loss_last"), "{:.4f}"),
                    note.replace("|", "/"),
                ]
            )
            + " |"
        )
    for r in merge:
        if "max_abs_logit_diff" in r:
            lines.append(
                f"\n4-bit merge ({r['shape']}): export vs 4-bit base + adapter, max |Δlogit| "
                f"{r['max_abs_logit_diff']:.4f} (logits up to {r['logit_scale']:.2f}), top-1 agreement "
                f"{r['top1_agree']:.1%}, merge {r['merge_s']:.1f} s"
            )
        else:
            lines.append(f"\n4-bit merge: {r.get('refused') or r.get('error') or r.get('skipped')}")
    lines.append(
        "\nMFU = tokens/s × FLOPs per token / dense bf16 peak; FLOPs per token = k·N + 6·L·d_q·Σn²/Σn "
        "(k = 6 full, 4 LoRA/QLoRA; N = parameters in matmuls incl. the LM head; n = sample lengths): "
        + ", ".join(f"{m} {f / 1e9:.3g} GFLOP" for m, f in flops.items())
    )
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)
