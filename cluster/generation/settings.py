"""The `generate` settings: what to answer, where to write, how to sample and how many engine replicas to run.

The same schema comes from a YAML file (`rayfit generate --config FILE`), from flags, or from code (evaluation,
pairs); unknown keys are errors and every problem is reported at once (cluster.spec.load.validate_model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cluster.spec.base import Problem, Section
from cluster.spec.data import Format

OUTPUT_KINDS = {".jsonl": "jsonl", ".parquet": "parquet"}


class SamplingSettings(Section):
    """How each answer is sampled (vLLM's SamplingParams; temperature 0 is greedy)."""

    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set with this mass.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty on tokens already present (1.0: none).")
    seed: int | None = Field(None, description="Random seed per answer (answer i of a row uses seed + i); null: unseeded.")
    stop: list[str] = Field(default_factory=list, description="Strings that end an answer (not included in it).")
    ignore_eos: bool = Field(
        False, description="Go on past the end-of-turn token up to max_tokens (benchmarks: every answer the same length)."
    )

    def vllm_params(self, max_tokens: int, sample: int) -> dict[str, Any]:
        """vLLM SamplingParams fields for answer number `sample` of a row."""
        params = self.model_dump(exclude={"seed", "stop"}) | {"max_tokens": max_tokens}
        if self.seed is not None:
            params["seed"] = self.seed + sample
        if self.stop:
            params["stop"] = list(self.stop)
        return params


class EngineSettings(Section):
    """The vLLM engine replicas and how they sample: what `rayfit generate`, evaluation and `rayfit data pairs` share."""

    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="How answers are sampled.")
    max_tokens: int = Field(256, ge=1, description="Longest answer in tokens; a longer one ends with finish_reason length.")
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + answer in tokens; null: the model's maximum. Longer prompts fail."
    )
    replicas: int = Field(1, ge=1, description="vLLM engine replicas (Ray actors), each with a copy of the model.")
    gpus_per_replica: float = Field(0, ge=0, description="GPUs per replica when tensor_parallel_size is 1; 0 on CPU.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica shards the model over (one node).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto: float32 on CPU replicas (gpus_per_replica 0), else vLLM's choice."
    )
    batch_size: int = Field(32, ge=1, description="Rows sent to an engine at a time (Ray Data batch).")
    max_num_seqs: int | None = Field(
        None, ge=1, description="Most sequences an engine decodes at once; null: 256 on CPUs (measured), vLLM's own on GPUs."
    )
    enforce_eager: bool | None = Field(
        None,
        description="Skip torch.compile and graph capture: starts sooner, decodes slower. null: eager on CPU replicas "
        "(sooner end to end at the sizes measured, docs/generate.md), compiled on GPUs.",
    )
    cpu_kv_cache_gib: float = Field(1, gt=0, description="KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments (AsyncEngineArgs field names); they win over ours."
    )

    def problems(self) -> list[Problem]:
        """GPUs per replica and tensor parallelism are two ways to give a replica GPUs: one at a time."""
        if self.tensor_parallel_size > 1 and self.gpus_per_replica:
            return [
                Problem(
                    "gpus_per_replica",
                    "gpus_per_replica is set together with tensor_parallel_size > 1.",
                    "leave gpus_per_replica at 0: a replica takes one GPU per tensor-parallel rank.",
                )
            ]
        return []


class TeacherSettings(Section):
    """An OpenAI-compatible endpoint that answers instead of a local model (a teacher for distillation)."""

    url: str = Field(description="Base URL of the API, e.g. https://api.example.com/v1 (chat completions are sent there).")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key (never the key itself); null: the endpoint takes none.",
    )
    timeout_s: float = Field(60, gt=0, description="Seconds one request may take before its row fails (per try).")
    max_retries: int = Field(2, ge=0, description="Retries of a request that timed out or got 429/5xx, with backoff.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once per replica.")


class GenerateSettings(EngineSettings):
    """One batch generation: a model, an input of prompts, an output of answers, and the engine to run."""

    model: str = Field(
        description="A base (folder, hub id org/name, embedded:smollm2-135m-instruct), an export, a LoRA checkpoint "
        "(runs on its base with the adapter), or a run folder (its export, else its best checkpoint); with `teacher`, "
        "the model name the endpoint serves."
    )
    input: str = Field(
        description="Prompts: a .jsonl/.json/.parquet/.csv file, a folder of them, an s3:// or gs:// URI, hf:<dataset "
        "id> or embedded:construction-faq, in any record shape training reads (docs/data.md); a record ending with an "
        "assistant answer is prompted with the conversation before it, and that answer is kept as `reference`."
    )
    output: str = Field(
        description="Where the answers go: a .jsonl or .parquet file, local or s3://, gs://; finished blocks are kept "
        "in OUTPUT.parts/ until the whole output is written, so a rerun continues where a killed job stopped."
    )
    input_format: Format = Field("auto", description="Record shape of the input; auto detects it from the keys.")
    system_prompt: str | None = Field(None, description="System message added to prompts that have none.")
    adapter: str | None = Field(
        None,
        description="A LoRA adapter to answer with (rayfit checkpoint, run folder or PEFT folder); set by itself "
        "when `model` is a LoRA checkpoint or run.",
    )
    n: int = Field(1, ge=1, description="Answers per prompt (each its own output row, numbered by `sample`).")
    block_rows: int = Field(
        100, ge=1, description="Input rows per output block: the unit that is written at once and skipped on a rerun."
    )
    teacher: TeacherSettings | None = Field(
        None, description="Answer through an OpenAI-compatible endpoint instead of local vLLM engines (`model` is its name)."
    )
    as_training_data: bool = Field(
        False,
        description="Write training records instead of answer rows: {messages: the conversation + the answer}, for "
        "distillation; answers that failed or hit max_tokens go to OUTPUT.rejected.jsonl instead.",
    )
    keep_system_prompt: bool = Field(
        False,
        description="With as_training_data: keep `system_prompt` in the training records. Default: dropped, so the "
        "student learns to answer as the prompted teacher does without being told.",
    )

    def output_kind(self) -> str:
        """jsonl or parquet, from the output's suffix."""
        return OUTPUT_KINDS.get("." + self.output.rsplit(".", 1)[-1].lower(), "")

    def problems(self) -> list[Problem]:
        """Rules across fields: the engine's, the output's type, and what a teacher endpoint cannot do."""
        found = super().problems()
        if not self.output_kind():
            found.append(
                Problem("output", f"{self.output!r} is neither .jsonl nor .parquet.", "name the output OUT.jsonl or OUT.parquet.")
            )
        if self.as_training_data and self.output_kind() == "parquet":
            found.append(Problem("as_training_data", "training records are written as JSON Lines.", "name the output OUT.jsonl."))
        if self.teacher and self.adapter:
            found.append(Problem("adapter", "a teacher endpoint answers with its own model.", "remove adapter."))
        return found


def job_engine(spec, max_tokens: int, replicas: int = 1, batch_size: int = 16, **engine: Any) -> EngineSettings:
    """Greedy engines for a job spec's model (evaluation, pairs): one GPU per replica and the spec's dtype when the Ray
    cluster has GPUs, else CPU replicas in float32 (as training there), and room for the longest training row
    (data.max_seq_len) plus the answer. Needs Ray initialised."""
    import ray

    from cluster.model.load import load_base_config

    # The cluster decides, not the spec: a run trained on GPUs is evaluated on a CPU box's engines too (as the
    # evaluation's models go to the GPU only when there is one).
    on_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    dtype = spec.model.dtype if on_gpu else "float32"
    # never past the model's own context: vLLM refuses to start beyond it
    limit = getattr(load_base_config(spec), "max_position_embeddings", None) or spec.data.max_seq_len + max_tokens
    return EngineSettings(
        max_tokens=max_tokens,
        max_model_len=min(spec.data.max_seq_len + max_tokens, limit),
        replicas=replicas,
        gpus_per_replica=1 if on_gpu else 0,
        dtype=dtype,
        batch_size=batch_size,
        **{k: v for k, v in engine.items() if k != "engine_kwargs"},
        engine_kwargs={"trust_remote_code": spec.model.trust_remote_code, **engine.get("engine_kwargs", {})},
    )


def load_settings(config: str | None, flags: dict[str, Any], sampling: list[str]) -> GenerateSettings:
    """Settings from an optional YAML file, then flags (None: not given) and `key=value` sampling settings on top;
    a SpecError lists every problem, with the file's line numbers."""
    from cluster.spec.load import validate_model
    from cluster.spec.reader import read_yaml_file

    data: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    if config:
        document = read_yaml_file(config, "generate settings")
        data, lines = document.data, document.lines
        data = dict(data) if isinstance(data, dict) else data
    if isinstance(data, dict):
        for key, value in flags.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):  # e.g. teacher flags over the file's teacher
                data[key] = {**data[key], **value}
            elif value is not None:
                data[key] = value
        for item in sampling:
            key, _, value = item.partition("=")
            data["sampling"] = {**data.get("sampling", {}), key.strip(): _scalar(value)}
    return validate_model(GenerateSettings, data, config or "rayfit generate", lines)


def _scalar(text: str) -> Any:
    """A flag value as YAML reads it: 0.7 -> float, 3 -> int, [a, b] -> list, else the text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
