"""`make_plan`: memory, time and cost of a spec from its base model's config.json, before any GPU is held."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from cluster.planner.architectures import load_config
from cluster.planner.gpus import Gpu, find_gpu, gpu_from_cluster_resources, known_gpu
from cluster.planner.memory import Memory, memory
from cluster.planner.params import ParamCounts, count_params
from cluster.planner.steps import StepRequest, evaluate_request, generate_request, merge_request
from cluster.planner.throughput import Throughput, throughput
from cluster.spec.base import SpecError
from cluster.spec.job import JobSpec

# Sharding setups compared in every plan: (label, cluster changes). fsdp2+offload is FSDP2's one CPU offload
# (parameters, gradients and optimizer states together).
SETUPS = (
    ("ddp", {"sharding": "ddp", "offload_optimizer": False, "offload_params": False}),
    ("zero2", {"sharding": "deepspeed_zero2", "offload_optimizer": False, "offload_params": False}),
    ("zero2+offload", {"sharding": "deepspeed_zero2", "offload_optimizer": True, "offload_params": False}),
    ("zero3", {"sharding": "deepspeed_zero3", "offload_optimizer": False, "offload_params": False}),
    ("zero3+offload", {"sharding": "deepspeed_zero3", "offload_optimizer": True, "offload_params": False}),
    ("zero3+offload_all", {"sharding": "deepspeed_zero3", "offload_optimizer": True, "offload_params": True}),
    ("fsdp2", {"sharding": "fsdp2", "offload_optimizer": False, "offload_params": False}),
    ("fsdp2+offload", {"sharding": "fsdp2", "offload_optimizer": True, "offload_params": True}),
)


@dataclass(frozen=True)
class Plan:
    """Everything the planner worked out for one spec on one GPU type; `fits` is None when no GPU is in play."""

    spec: JobSpec  # the spec as planned (cluster.num_workers set to the GPU count)
    config_source: str  # where config.json came from
    architecture: str  # config.model_type
    gpu: Gpu | None
    mfu: float
    price_per_gpu_hour: float | None
    counts: ParamCounts
    memory: Memory
    throughput: Throughput
    by_sharding: dict[str, int]  # total bytes per GPU under each sharding setup that the spec's method allows
    merge: StepRequest | None = None  # the merge task's resources (when merge.enabled)
    evaluate: StepRequest | None = None  # the evaluate loss task's resources (when evaluate.enabled)
    generate: StepRequest | None = None  # one vLLM engine replica of evaluation (when it generates answers)
    config: Any = field(repr=False, compare=False, default=None)

    @property
    def num_gpus(self) -> int:
        """GPUs the model is spread over (one per Ray Train worker)."""
        return self.spec.cluster.num_workers

    @property
    def fits(self) -> bool | None:
        """Whether one GPU holds its share, reserve and plan.headroom included, and GRPO's vLLM rollout engine fits
        its own GPU(s); None when no GPU type is known."""
        if self.gpu is None:
            return None
        return self.memory.total <= self.gpu.memory * (1 - self.spec.plan.headroom) and bool(self.rollout_fits)

    @property
    def rollout_fits(self) -> bool | None:
        """Whether GRPO's vLLM rollout engine fits its GPU (True when there is none); None when no GPU type is known."""
        if self.gpu is None:
            return None
        return self.memory.rollout_engine <= self.gpu.memory * (1 - self.spec.plan.headroom)

    def to_json(self) -> dict:
        """The plan as a plain, JSON-serialisable dict (bytes, seconds, counts)."""
        s = self.spec
        return {
            "base": s.model.base,
            "config_source": self.config_source,
            "architecture": self.architecture,
            "method": s.model.method,
            "dtype": s.model.dtype,
            "gpu": None if self.gpu is None else asdict(self.gpu),
            "num_gpus": self.num_gpus,
            "sharding": s.cluster.sharding,
            "offload_optimizer": s.cluster.offload_optimizer,
            "offload_params": s.cluster.offload_params,
            "micro_batch_size": s.train.micro_batch_size,
            "max_seq_len": s.data.max_seq_len,
            "gradient_checkpointing": s.train.gradient_checkpointing,
            "activation_offloading": s.train.activation_offloading,
            "mfu": self.mfu,
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "params": self.counts.to_json(),
            "memory_per_gpu": self.memory.to_json(),
            "throughput": self.throughput.to_json(),
            "by_sharding": self.by_sharding,
            "fits": self.fits,
            "merge": self.merge and self.merge.to_json(),
            "evaluate": self.evaluate and self.evaluate.to_json(),
            "generate": self.generate and self.generate.to_json(),
        }


def make_plan(
    spec: JobSpec,
    gpu: str | None = None,
    num_gpus: int | None = None,
    price_per_gpu_hour: float | None = None,
    dataset_tokens: int | None = None,
) -> Plan:
    """Plan `spec` on `num_gpus` (default cluster.num_workers) GPUs of type `gpu` (default plan.gpu, then
    cluster.accelerator_type, then the GPU type of the Ray cluster this process is connected to; none on a CPU
    cluster), reading only the base model's config.json."""
    if num_gpus is not None:
        spec = with_changes(spec, {"cluster": {"num_workers": num_gpus}})
    config, source = load_config(spec.model.base, spec.model.revision, spec.model.trust_remote_code)
    explicit = gpu or spec.plan.gpu
    accelerator = (spec.cluster.accelerator_type or _connected_cluster_gpu()) if spec.cluster.use_gpu else None
    # An accelerator type the table lacks (a TPU, a new GPU) leaves the fit unchecked rather than blocking the job.
    found = find_gpu(explicit) if explicit else (find_gpu(accelerator) if accelerator and known_gpu(accelerator) else None)
    if found is None and not spec.cluster.use_gpu:
        spec = with_changes(spec, cpu_dtypes(spec))  # rayfit trains in float32 on CPUs (cluster.model.load.train_dtype)
    price = price_per_gpu_hour if price_per_gpu_hour is not None else spec.plan.price_per_gpu_hour
    return plan_with(spec, config, source, found, price, dataset_tokens)


def _connected_cluster_gpu() -> str | None:
    """The GPU type of the Ray cluster this process is already connected to (never connects or starts one)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return gpu_from_cluster_resources(ray.cluster_resources())


def plan_with(spec: JobSpec, config, source: str, gpu: Gpu | None, price: float | None, dataset_tokens: int | None) -> Plan:
    """The plan of `spec` for an already loaded config (what the fit check uses to try changes)."""
    counts = count_params(config, spec.model)
    by_sharding = {}
    for label, changes in SETUPS:
        try:
            variant = with_changes(spec, {"cluster": changes})
        except (SpecError, ValidationError):
            continue  # a setup the rest of the spec does not allow
        by_sharding[label] = memory(variant, config, counts).total
    return Plan(
        spec=spec,
        config_source=source,
        architecture=config.model_type,
        gpu=gpu,
        mfu=spec.plan.mfu,
        price_per_gpu_hour=price,
        counts=counts,
        memory=memory(spec, config, counts),
        throughput=throughput(spec, config, counts, gpu, spec.plan.mfu, dataset_tokens, price),
        by_sharding=by_sharding,
        config=config,
        merge=merge_request(spec, config, counts) if spec.merge.enabled else None,
        evaluate=evaluate_request(spec, config, counts) if spec.evaluate.enabled else None,
        generate=generate_request(spec, config, counts) if spec.evaluate.enabled and spec.evaluate.max_samples != 0 else None,
    )


def cpu_dtypes(spec: JobSpec) -> dict[str, dict]:
    """The dtype changes a CPU run makes: float32 weights, and float32 compute for 4-bit layers."""
    model: dict = {"dtype": "float32"}
    if spec.model.method == "qlora":
        model["quantization"] = {**spec.model.quantization.model_dump(exclude_unset=True), "compute_dtype": "float32"}
    return {"model": model}


def with_changes(spec: JobSpec, changes: dict[str, dict]) -> JobSpec:
    """A copy of `spec` with some section fields replaced, validated again (SpecError if the result breaks a rule)."""
    data = spec.model_dump(exclude_unset=True)
    for section, fields in changes.items():
        data[section] = {**data.get(section, {}), **fields}
    return JobSpec.model_validate(data)
