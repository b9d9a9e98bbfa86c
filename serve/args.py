"""The arguments of a rayfit Serve application: validated once, every problem reported together.

The same dict comes from `serve run serve.app:build_app key=value`, the `args:` of a Serve config YAML
(`serve deploy`) and the `serveConfigV2` of a KubeRay RayService, so this schema is the whole contract.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cluster import storage
from cluster.spec.base import Problem, Section
from cluster.spec.load import validate_model
from cluster.spec.reader import read_yaml_file

NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,127}$")


class ApiKeyArgs(Section):
    """One API key, read from an environment variable or a mounted secret file, never written in the args."""

    env: str | None = Field(None, description="Name of the environment variable holding the key (e.g. TENANT_A_KEY).")
    file: str | None = Field(None, description="Path of a mounted secret file whose content (stripped) is the key.")
    models: list[str] | None = Field(
        None, description="Models (base name or adapter names) this key may use and see in /v1/models; null: all.")

    def problems(self) -> list[Problem]:
        """Exactly one source per key."""
        if (self.env is None) == (self.file is None):
            return [Problem("", "an API key needs exactly one of `env` or `file`.",
                            "give `env: VAR_NAME` (an environment variable) or `file: /path/to/secret`.")]
        return []


class AutoscalingArgs(Section):
    """Replica autoscaling, passed to Serve's autoscaling_config."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas of the engine.")
    max_replicas: int = Field(1, ge=1, description="Most replicas of the engine.")
    target_ongoing_requests: float = Field(8, gt=0, description="Ongoing requests per replica the autoscaler aims for.")

    def problems(self) -> list[Problem]:
        """min <= max."""
        if self.min_replicas > self.max_replicas:
            return [Problem("min_replicas", f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas}).",
                            "raise max_replicas or lower min_replicas.")]
        return []


class VllmArgs(Section):
    """Settings used only by `engine: vllm` (Ray Serve LLM); ignored by the transformers engine."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica for tensor parallelism.")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank any adapter may have (vLLM preallocates it).")
    max_model_len: int | None = Field(None, ge=16, description="vLLM context length; null: the model's.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    accelerator_type: str | None = Field(None, description="Ray accelerator type to schedule on (e.g. A10G, H100).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments, passed as they are.")


class ServeArgs(Section):
    """Everything a rayfit Serve application needs: one base (or export) and any number of LoRA adapters."""

    model: str = Field(..., description="Base model or export: a folder, s3://... or gs://... URI (an export has "
                                        "manifest.json kind=export), an org/name hub id, or embedded:smollm2-135m-instruct.")
    model_name: str | None = Field(
        None, description="Name clients pass as `model` for the base; default: the folder or hub name.")
    adapters: dict[str, str] = Field(default_factory=dict, description="Adapter name -> checkpoint URI (a rayfit checkpoint "
                                     "or a plain PEFT adapter folder, local or s3://, gs://); clients pass the name as `model`.")
    adapter_root: str | None = Field(None, description="A folder or URI whose sub-folders are adapters found by name on "
                                     "first use, so an adapter trained after deployment is served without a restart.")
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers+PEFT (CPU or GPU) or vllm (Ray Serve LLM, GPU).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the transformers engine runs; auto: cuda if present.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto: float32 on CPU, bfloat16 on GPU.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (off unless you trust it).")
    num_replicas: int | None = Field(None, ge=1, description="Fixed number of engine replicas; leave null with autoscaling.")
    autoscaling: AutoscalingArgs | None = Field(None, description="Autoscale engine replicas instead of a fixed number.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one engine replica works on at once (Serve's max_ongoing_requests).")
    max_queued_requests: int = Field(256, ge=1, description="Requests waiting for a replica before new ones get 503.")
    max_batch_size: int = Field(8, ge=1, description="Most sequences decoded together in one forward pass.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a batch waits to fill before it starts.")
    max_concurrent_batches: int = Field(2, ge=1, description="Batches one replica decodes at once, step by step in turn.")
    max_loaded_adapters: int = Field(16, ge=1, description="LRU bound on adapters held in one replica's memory.")
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + completion in tokens; null: the model's maximum.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none.")
    num_cpus: float = Field(1, ge=0, description="CPUs reserved per engine replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per engine replica (transformers engine).")
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per API (ingress) replica.")
    api_keys: list[ApiKeyArgs] = Field(default_factory=list, description="Accepted API keys; empty: no auth.")
    vllm: VllmArgs = Field(default_factory=VllmArgs, description="Settings for engine: vllm.")

    def base_name(self) -> str:
        """The name clients use for the base model."""
        if self.model_name:
            return self.model_name
        return self.model.removeprefix("embedded:").rstrip("/").split("/")[-1] or "base"

    def problems(self) -> list[Problem]:
        """Rules across fields: names, replicas, batching, keys and the vLLM path."""
        found = []
        names = [self.base_name(), *self.adapters]
        for name in self.adapters:
            if not NAME.match(name):
                found.append(Problem(f"adapters.{name}", f"adapter name {name!r} is not a valid model name.",
                                     "use letters, digits, '.', '_' and '-' (128 at most), starting with a letter or digit."))
        if self.base_name() in self.adapters:
            found.append(Problem(f"adapters.{self.base_name()}", f"adapter {self.base_name()!r} has the base model's name.",
                                 "rename the adapter or set model_name."))
        if self.num_replicas is not None and self.autoscaling is not None:
            found.append(Problem("num_replicas", "num_replicas and autoscaling are both set.", "keep one of them."))
        if self.max_ongoing_requests < self.max_batch_size * self.max_concurrent_batches:
            found.append(Problem("max_ongoing_requests", f"max_ongoing_requests ({self.max_ongoing_requests}) is below "
                                 "max_batch_size * max_concurrent_batches "
                                 f"({self.max_batch_size * self.max_concurrent_batches}), "
                                 "so batches never fill.", "raise max_ongoing_requests or lower max_batch_size."))
        for i, key in enumerate(self.api_keys):
            found += [p.within(f"api_keys.{i}") for p in key.problems()]
            for model in key.models or []:
                if model not in names and self.adapter_root is None:
                    found.append(Problem(f"api_keys.{i}.models", f"{model!r} is neither the base ({self.base_name()!r}) "
                                         "nor an adapter.", f"use one of: {', '.join(names)}."))
        if self.autoscaling:
            found += [p.within("autoscaling") for p in self.autoscaling.problems()]
        if self.engine == "vllm":
            found += self._vllm_problems()
        return found

    def _vllm_problems(self) -> list[Problem]:
        # Ray Serve LLM downloads adapters itself from one object-store prefix, `{dynamic_lora_loading_path}/{name}`.
        found = []
        parents = {uri.rstrip("/").rsplit("/", 1)[0] for uri in self.adapters.values()}
        for name, uri in self.adapters.items():
            if not storage.is_remote(uri):
                found.append(Problem(f"adapters.{name}", f"engine vllm loads adapters only from object storage, got {uri!r}.",
                                     "upload the checkpoint to s3:// or gs:// (Ray Serve LLM's dynamic_lora_loading_path)."))
            elif uri.rstrip("/").rsplit("/", 1)[-1] != name:
                found.append(Problem(f"adapters.{name}", f"engine vllm finds an adapter at <prefix>/<name>, but {uri!r} "
                                     f"does not end in /{name}.", f"store it as <prefix>/{name} or rename the adapter."))
        if self.adapter_root:
            parents.add(self.adapter_root.rstrip("/"))
            if not storage.is_remote(self.adapter_root):
                found.append(Problem("adapter_root", "engine vllm needs adapter_root in object storage.", "use s3:// or gs://."))
        if len(parents) > 1:
            found.append(Problem("adapters", f"engine vllm reads every adapter from one prefix, found {sorted(parents)}.",
                                 "put all adapters under one s3:// or gs:// folder."))
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
