"""What rayfit adds to vLLM's worker (the engine arg `worker_extension_cls`), run in the engine's own process through
`collective_rpc` from the Serve replica.

One method: on CPU, in steps in which no request uses an adapter, run the model's layers without their LoRA wrappers.
With LoRA enabled (always, when the app has `storage`, so published models can be served), vLLM replaces every
linear layer, the embedding and the logits processor with a LoRA wrapper. On CPU (`PunicaWrapperCPU`, PyTorch ops)
those wrappers cost base-only traffic even when no token uses an adapter: each linear layer allocates its LoRA
buffers, and the logits processor multiplies every token's logits by the LoRA weights of its (empty) slot, gathering
a vocabulary-sized matrix per token. vLLM V1 marks every step as prefill (`LoRAMapping(is_prefill=True)`), so the
wrapper's `no_lora` flag (no token of this step uses an adapter) is computed for every step; when it is set, each
wrapper here calls its base layer, which is exactly what the wrapper computes then (the LoRA terms of slot -1 are
zero). A step in which any token uses an adapter is computed by vLLM unchanged.

Only without torch.compile (`enforce_eager`): vLLM compiles the model once and runs it without guards, so a branch
taken at compile time would be taken for every later step. With compilation, vLLM's behaviour is kept.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class RayfitWorker:
    """Mixed into vLLM's worker class by vLLM itself (`worker_extension_cls`)."""

    def rayfit_bypass_idle_lora(self) -> int:
        """Make this worker's LoRA wrappers call their base layer in steps without adapters; returns how many wrappers
        were changed (0 on GPU, without LoRA, with torch.compile, or when vLLM's internals are not the ones this was
        written for: vLLM's behaviour is kept)."""
        try:
            from vllm.config import CompilationMode
            from vllm.lora.layers.base import BaseLayerWithLoRA
            from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

            compiled = self.vllm_config.compilation_config.mode != CompilationMode.NONE
            model = self.model_runner.get_model()
        except (AttributeError, ImportError) as e:
            logger.info("rayfit: LoRA wrappers left as vLLM has them (%s)", e)
            return 0
        if compiled:
            logger.info("rayfit: LoRA wrappers left as vLLM has them (the model is compiled)")
            return 0
        changed = 0
        for module in model.modules():
            wrapper = getattr(module, "punica_wrapper", None)
            if isinstance(module, BaseLayerWithLoRA) and isinstance(wrapper, PunicaWrapperCPU):
                module.forward = _base_when_idle(module, wrapper, module.forward)
                changed += 1
        return changed


def _base_when_idle(module, wrapper, forward):
    """`forward`, except when no token of the current step uses an adapter (`no_lora`): then the base layer's own
    forward, with any LoRA-wrapped argument (the logits processor's tied `lm_head`) replaced by its base layer."""
    from vllm.lora.layers.base import BaseLayerWithLoRA

    def run(*args, **kwargs):
        if not (wrapper.is_prefill and wrapper.no_lora):  # no_lora is computed for prefill-marked steps only
            return forward(*args, **kwargs)
        args = tuple(a.base_layer if isinstance(a, BaseLayerWithLoRA) else a for a in args)
        return module.base_layer(*args, **kwargs)

    return run
