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

    def vllm_params(self, max_tokens: int, sample: int) -> dict[str, Any]:
        """vLLM SamplingParams fields for answer number `sample` of a row."""
        params = self.model_dump(exclude={"seed", "stop"}) | {"max_tokens": max_tokens}
        if self.seed is not None:
            params["seed"] = self.seed + sample
        if self.stop:
            params["stop"] = list(self.stop)
        return params


class GenerateSettings(Section):
    """One batch generation: a model, an input of prompts, an output of answers, and the engine to run."""

    model: str = Field(
        description="A base (folder, hub id org/name, embedded:smollm2-135m-instruct), an export, a LoRA checkpoint "
        "(runs on its base with the adapter), or a run folder (its export, else its best checkpoint)."
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
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="How answers are sampled.")
    n: int = Field(1, ge=1, description="Answers per prompt (each its own output row, numbered by `sample`).")
    max_tokens: int = Field(256, ge=1, description="Longest answer in tokens; a longer one ends with finish_reason length.")
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + answer in tokens; null: the model's maximum. Longer prompts fail."
    )
    replicas: int = Field(1, ge=1, description="vLLM engine replicas (Ray actors), each with a copy of the model.")
    gpus_per_replica: float = Field(0, ge=0, description="GPUs per replica when tensor_parallel_size is 1; 0 on CPU.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica shards the model over (one node).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto: vLLM's choice from the model config and the device."
    )
    batch_size: int = Field(16, ge=1, description="Rows sent to an engine at a time (Ray Data batch).")
    max_num_seqs: int = Field(64, ge=1, description="Sequences one engine decodes together (continuous batching).")
    block_rows: int = Field(
        100, ge=1, description="Input rows per output block: the unit that is written at once and skipped on a rerun."
    )
    enforce_eager: bool = Field(False, description="Skip torch.compile and graph capture: starts in seconds, decodes slower.")
    cpu_kv_cache_gib: float = Field(1, gt=0, description="KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments (AsyncEngineArgs field names); they win over ours."
    )

    def output_kind(self) -> str:
        """jsonl or parquet, from the output's suffix."""
        return OUTPUT_KINDS.get("." + self.output.rsplit(".", 1)[-1].lower(), "")

    def problems(self) -> list[Problem]:
        """Rules across fields: the output's type, and GPUs with tensor parallelism."""
        found = []
        if not self.output_kind():
            found.append(
                Problem("output", f"{self.output!r} is neither .jsonl nor .parquet.", "name the output OUT.jsonl or OUT.parquet.")
            )
        if self.tensor_parallel_size > 1 and self.gpus_per_replica:
            found.append(
                Problem(
                    "gpus_per_replica",
                    "gpus_per_replica is set together with tensor_parallel_size > 1.",
                    "leave gpus_per_replica at 0: a replica takes one GPU per tensor-parallel rank.",
                )
            )
        return found


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
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in flags.items() if v is not None}}
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
