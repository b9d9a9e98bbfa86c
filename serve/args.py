"""The arguments of a rayfit Serve application: validated once, every problem reported together.

The same dict comes from `serve run serve.app:build_app key=value`, the `args:` of a Serve config YAML
(`serve deploy`) and the `serveConfigV2` of a KubeRay RayService, so this schema is the whole contract.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cluster.spec.base import Problem, Section
from cluster.spec.load import validate_model
from cluster.spec.reader import read_yaml_file

NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,127}$")


class ApiKeyArgs(Section):
    """One API key, read from an environment variable or a mounted secret file, never written in the args."""

    env: str | None = Field(None, description="Name of the environment variable holding the key (e.g. TENANT_A_KEY).")
    file: str | None = Field(None, description="Path of a mounted secret file whose content (stripped) is the key.")
    models: list[str] | None = Field(
        None, description="Models (base name or adapter names) this key may use and see in /v1/models; null: all."
    )
    tenant: str | None = Field(
        None,
        description="Tenant whose files, jobs and fine-tuned models this key sees (keys may share one); "
        "default: the environment variable's or the file's name.",
    )
    max_concurrent_jobs: int | None = Field(
        None, ge=0, description="Unfinished fine-tuning jobs this tenant may have at once (429 beyond); null: no limit."
    )
    max_stored_bytes: int | None = Field(
        None, ge=0, description="Bytes of uploaded files this tenant may keep (429 beyond); null: no limit."
    )

    def tenant_name(self) -> str:
        """The tenant this key belongs to."""
        return self.tenant or self.env or Path(self.file or "default").name

    def problems(self) -> list[Problem]:
        """Exactly one source per key."""
        if (self.env is None) == (self.file is None):
            return [
                Problem(
                    "",
                    "an API key needs exactly one of `env` or `file`.",
                    "give `env: VAR_NAME` (an environment variable) or `file: /path/to/secret`.",
                )
            ]
        return []


class AutoscalingArgs(Section):
    """Replica autoscaling, passed to Serve's autoscaling_config."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas of the engine.")
    max_replicas: int = Field(1, ge=1, description="Most replicas of the engine.")
    target_ongoing_requests: float = Field(8, gt=0, description="Ongoing requests per replica the autoscaler aims for.")

    def problems(self) -> list[Problem]:
        """min <= max."""
        if self.min_replicas > self.max_replicas:
            return [
                Problem(
                    "min_replicas",
                    f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas}).",
                    "raise max_replicas or lower min_replicas.",
                )
            ]
        return []


class VllmArgs(Section):
    """vLLM engine settings beyond the common ones (each replica runs one vLLM AsyncLLM)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica for tensor parallelism (one node).")
    max_lora_rank: int | None = Field(
        None,
        ge=1,
        description="Largest LoRA rank vLLM preallocates; null: the largest rank of the listed adapters "
        "(16 when none is listed yet), rounded up to a rank vLLM supports.",
    )
    max_loras: int | None = Field(
        None,
        ge=1,
        description="Adapters in one batch (vLLM's max_loras); null: the listed adapters, at least 1, "
        "8 when adapter_root or storage is set.",
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    cpu_kv_cache_gib: float = Field(1, gt=0, description="KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE).")
    enforce_eager: bool = Field(False, description="Skip torch.compile and graph capture: starts in seconds, decodes slower.")
    tool_call_parser: str | None = Field(
        None,
        description="vLLM tool parser that turns the model's tool-call text into `tool_calls` (e.g. hermes, "
        "llama3_json); null: requests with `tools` and a tool_choice other than none get a 400 naming this arg.",
    )
    accelerator_type: str | None = Field(None, description="Ray accelerator type to schedule on (e.g. A10G, H100).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vLLM engine arguments (AsyncEngineArgs field names), passed as they are; they win over ours.",
    )


class FinetuneArgs(Section):
    """The fine-tuning API (served when `storage` is set): which bases may be tuned, and how jobs are run."""

    bases: dict[str, str | dict[str, Any]] = Field(
        default_factory=dict,
        description="Base name -> template spec (a YAML path or a mapping: workers, GPUs, DeepSpeed, defaults) its jobs "
        "start from; empty: the served base with jobs/specs/demo-cpu.yaml.",
    )
    ray_address: str | None = Field(
        None,
        description="Ray job server the jobs are submitted to (http://HEAD:8265); default: RAY_API_SERVER_ADDRESS, "
        "else this cluster's dashboard.",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray runtime_env of every job (e.g. {working_dir: .} or env_vars with PYTHONPATH); empty: the "
        "image's code, as `ray job submit` without --working-dir.",
    )
    entrypoint_num_cpus: float = Field(
        0.5, ge=0, description="CPUs a job's driver holds; jobs wait in Ray's queue until the cluster has them."
    )
    max_upload_bytes: int = Field(512 * 1024**2, ge=1, description="Largest file POST /v1/files accepts, in bytes.")
    reconcile_s: float = Field(5, gt=0, description="Seconds between checks of unfinished jobs against Ray.")
    preload: bool = Field(
        True,
        description="Load a job's model into vLLM as soon as the job succeeds, so its first request does not wait for "
        "the load; off: on its first request.",
    )


class ServeArgs(Section):
    """Everything a rayfit Serve application needs: one base (or export) and any number of LoRA adapters."""

    model: str = Field(
        ...,
        description="Base model or export: a folder, s3://... or gs://... URI (an export has "
        "manifest.json kind=export), an org/name hub id, or embedded:smollm2-135m-instruct.",
    )
    model_name: str | None = Field(
        None, description="Name clients pass as `model` for the base; default: the folder or hub name."
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapter name -> checkpoint URI (a rayfit checkpoint, "
        "a run folder (its best checkpoint) or a plain PEFT adapter folder, local or s3://, "
        "gs://); clients pass the name as `model`.",
    )
    adapter_root: str | None = Field(
        None,
        description="A folder or URI whose sub-folders are adapters found by name on "
        "first use, so an adapter trained after deployment is served without a restart.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto: float32 on CPU (vllm-cpu decodes bfloat16 slower), the model config's on GPU."
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (off unless you trust it).")
    num_replicas: int | None = Field(None, ge=1, description="Fixed number of engine replicas; leave null with autoscaling.")
    autoscaling: AutoscalingArgs | None = Field(None, description="Autoscale engine replicas instead of a fixed number.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Sequences one replica decodes together (vLLM's max_num_seqs, continuous batching)."
    )
    max_queued_requests: int = Field(
        256, ge=0, description="Requests one replica holds beyond max_ongoing_requests before new ones get 429."
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + completion in tokens; null: the model's maximum."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="max_tokens of a chat request that gives none; a request's own max_tokens may be larger."
    )
    max_loaded_adapters: int = Field(16, ge=1, description="Adapters one replica keeps in CPU memory (vLLM's max_cpu_loras).")
    num_cpus: float = Field(
        1, ge=0, description="CPUs reserved per replica (the API process; vLLM's engine core binds its own threads)."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per replica when tensor_parallel_size is 1; 0 on CPU.")
    api_keys: list[ApiKeyArgs] = Field(default_factory=list, description="Accepted API keys; empty: no auth.")
    vllm: VllmArgs = Field(default_factory=VllmArgs, description="vLLM engine settings.")
    storage: str | None = Field(
        None,
        description="Folder, shared mount, s3:// or gs:// URI of the fine-tuning service's files, jobs and models; "
        "set, the same endpoint also serves OpenAI's files and fine_tuning.jobs routes (docs/service.md).",
    )
    finetune: FinetuneArgs = Field(default_factory=FinetuneArgs, description="The fine-tuning API (with storage).")

    def base_name(self) -> str:
        """The name clients use for the base model."""
        if self.model_name:
            return self.model_name
        return self.model.removeprefix("embedded:").rstrip("/").split("/")[-1] or "base"

    def problems(self) -> list[Problem]:
        """Rules across fields: names, replicas and keys."""
        found = []
        names = [self.base_name(), *self.adapters]
        for name in self.adapters:
            if not NAME.match(name):
                found.append(
                    Problem(
                        f"adapters.{name}",
                        f"adapter name {name!r} is not a valid model name.",
                        "use letters, digits, '.', '_' and '-' (128 at most), starting with a letter or digit.",
                    )
                )
        if self.base_name() in self.adapters:
            found.append(
                Problem(
                    f"adapters.{self.base_name()}",
                    f"adapter {self.base_name()!r} has the base model's name.",
                    "rename the adapter or set model_name.",
                )
            )
        if self.num_replicas is not None and self.autoscaling is not None:
            found.append(Problem("num_replicas", "num_replicas and autoscaling are both set.", "keep one of them."))
        for i, key in enumerate(self.api_keys):
            found += [p.within(f"api_keys.{i}") for p in key.problems()]
            for model in key.models or []:
                if model not in names and self.adapter_root is None:
                    found.append(
                        Problem(
                            f"api_keys.{i}.models",
                            f"{model!r} is neither the base ({self.base_name()!r}) nor an adapter.",
                            f"use one of: {', '.join(names)}.",
                        )
                    )
        if self.autoscaling:
            found += [p.within("autoscaling") for p in self.autoscaling.problems()]
        for name in self.finetune.bases:
            if name != self.base_name():
                found.append(
                    Problem(
                        f"finetune.bases.{name}",
                        f"{name!r} is not the base this app serves ({self.base_name()!r}), so its adapters could not "
                        "be answered here.",
                        f"use {self.base_name()!r}, or run another app (`serve run ... model={name} storage=...`).",
                    )
                )
        if self.vllm.tensor_parallel_size > 1 and self.num_gpus:
            found.append(
                Problem(
                    "num_gpus",
                    "num_gpus is set together with vllm.tensor_parallel_size > 1.",
                    "leave num_gpus at 0: the replica reserves one GPU per tensor-parallel rank.",
                )
            )
        return found


def parse_args(args: dict[str, Any] | ServeArgs) -> ServeArgs:
    """Validate application args (a plain dict); raises SpecError listing every problem with its field and fix."""
    if isinstance(args, ServeArgs):
        return args
    return validate_model(ServeArgs, args, "serve args")


def load_args(path: str | Path) -> ServeArgs:
    """Read Serve args from a YAML file (read defensively, like a job spec) and validate them, with lines."""
    doc = read_yaml_file(path, "Serve args")
    return validate_model(ServeArgs, doc.data, str(path), doc.lines)
