"""What rayfit adds to vLLM's worker (the engine arg `worker_extension_cls`), run in the engine's own process through
`collective_rpc` from the Serve replica.

One method: on CPU, skip the LoRA ops of decode steps in which no request uses an adapter. With LoRA enabled (always,
when the app has `storage`, so published models can be served), vLLM's CPU wrapper (`PunicaWrapperCPU`, PyTorch ops)
gathers and multiplies LoRA weights for every decoded token, adapter or not: base-only traffic measured 0.75x the
throughput of the same engine without LoRA (docs/benchmarks.md). vLLM's own CPU wrapper already returns early from its
prefill ops when no token uses an adapter (its `no_lora` flag, computed for every step), and its GPU kernels do the
same for decode; this extends that early return to the CPU decode ops. A step in which any token uses an adapter is
computed by vLLM unchanged.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)
DECODE_OPS = ("_shrink_decode", "_expand_decode", "_expand_slice_decode")


class RayfitWorker:
    """Mixed into vLLM's worker class by vLLM itself (`worker_extension_cls`)."""

    def rayfit_skip_idle_lora(self) -> int:
        """Make this worker's CPU LoRA wrappers skip decode steps without adapters; returns how many were changed (0 on
        GPU, without LoRA, or when vLLM's internals are not the ones this was written for: vLLM's behaviour is kept)."""
        try:
            from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

            wrappers = self.model_runner.lora_manager._adapter_manager.punica_wrapper_mapping.values()
        except (AttributeError, ImportError) as e:
            logger.info("rayfit: LoRA decode ops left as vLLM has them (%s)", e)
            return 0
        changed = 0
        for wrapper in wrappers:
            if isinstance(wrapper, PunicaWrapperCPU) and all(hasattr(wrapper, op) for op in DECODE_OPS):
                for op in DECODE_OPS:
                    setattr(wrapper, op, _unless_idle(wrapper, getattr(wrapper, op)))
                changed += 1
        return changed


def _unless_idle(wrapper, op):
    """`op`, except when no token of the current step uses an adapter (`no_lora`): then nothing, as vLLM's prefill
    ops do. The outputs it would have added to are the base layer's, unchanged."""

    @functools.wraps(op)
    def run(*args, **kwargs):
        if wrapper.no_lora:
            return None
        return op(*args, **kwargs)

    return run
