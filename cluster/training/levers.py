"""Speed levers on the worker: whether this machine can run the spec's levers, and the Trainer arguments they set.

The spec refuses what can never work (a GPU-only lever on a CPU cluster, cluster.spec.job). Only the worker knows
whether it has a CUDA device, which packages are installed and which architecture the base model has, so those are
checked here, before the model loads: a lever that cannot run is an error, never silently skipped (transformers
applies no Liger kernel to an architecture Liger lacks, and says so only in an info log).

The levers, and where each takes effect:
    train.liger_kernel       Liger's RMSNorm/RoPE/SwiGLU kernels, patched into the model by the Trainer
                             (`use_liger_kernel`); TRL keeps its own chunked LM head for the loss
    train.optimizer          adamw_torch_fused: one fused kernel per parameter group instead of a loop of small ones
    train.activation_offloading  TRL moves saved activations to host RAM in the forward (`activation_offloading`)
    train.torch_compile      the Trainer compiles the model (`torch_compile`)
    model.attn_implementation  flash_attention_2 reads packed rows' position ids as varlen sequences; sdpa and
                             flex_attention get a block-diagonal mask from them; packed rows are padding-free either way
"""

from __future__ import annotations

import importlib.util
from typing import Any

from cluster.errors import UserError
from cluster.spec import JobSpec


def lever_args(spec: JobSpec) -> dict[str, Any]:
    """The TrainingArguments the spec's levers set (the optimizer is `train.optimizer`, passed as it is)."""
    t = spec.train
    # activation_offloading is a field of TRL's configs only, so it is passed only when asked for
    offload = {"activation_offloading": True} if t.activation_offloading else {}
    return {"use_liger_kernel": t.liger_kernel, "torch_compile": t.torch_compile, **offload}


def lever_problems(spec: JobSpec, on_gpu: bool, model_type: str | None) -> list[str]:
    """Why this worker cannot run the spec's levers: no CUDA device, a missing package, an unsupported architecture."""
    out = []
    if spec.train.liger_kernel:
        if not on_gpu or not _installed("liger_kernel"):
            out.append(
                "train.liger_kernel: liger-kernel needs a CUDA GPU and the liger-kernel package (Triton kernels); "
                f"this worker has {'a GPU' if on_gpu else 'no CUDA GPU'} and "
                f"{'has' if _installed('liger_kernel') else 'lacks'} the package. "
                "Fix: pip install liger-kernel on GPU workers, or set train.liger_kernel: false."
            )
        elif model_type not in liger_architectures():
            out.append(
                f"train.liger_kernel: Liger has no kernels for architecture {model_type!r} "
                f"(it supports {', '.join(sorted(liger_architectures()))}). Fix: set train.liger_kernel: false."
            )
    if spec.model.attn_implementation == "flash_attention_2" and (not on_gpu or not _installed("flash_attn")):
        out.append(
            "model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package; "
            f"this worker has {'a GPU' if on_gpu else 'no CUDA GPU'} and "
            f"{'has' if _installed('flash_attn') else 'lacks'} the package. "
            "Fix: use the GPU image (it installs flash-attn), or set model.attn_implementation: sdpa."
        )
    return out


def check_levers(spec: JobSpec, on_gpu: bool) -> None:
    """Raise UserError naming every lever this worker cannot run; reads only config.json, before any weight loads."""
    model_type = None
    if spec.train.liger_kernel:
        from cluster.planner.architectures import load_config

        model_type = load_config(spec.model.base, spec.model.revision, spec.model.trust_remote_code)[0].model_type
    problems = lever_problems(spec, on_gpu, model_type)
    if problems:
        raise UserError("; ".join(problems))


def liger_architectures() -> set[str]:
    """Model types Liger Kernel patches (empty without the package)."""
    if not _installed("liger_kernel"):
        return set()
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
