"""A batch generation end to end: check, read the prompts, answer them on Ray Data + vLLM, write blocks, join them.

`answer` is the shared floor (evaluation and pairs call it with their own requests); `generate` is what
`rayfit generate` runs. Both need Ray initialised (the entrypoint does that): the engines run as Ray actors.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cluster.errors import UserError
from cluster.generation.engine import CARRIED, build
from cluster.generation.inputs import Prompt, read_prompts
from cluster.generation.progress import Progress
from cluster.generation.settings import EngineSettings, GenerateSettings
from cluster.generation.teacher import REFUSED, answer_http, api_key
from cluster.generation.training_rows import training_records
from cluster.generation.writer import BlockWriter
from cluster.model.artefacts import adapter_dir, base_and_adapter
from cluster.spec.data import SourceSpec


@dataclass
class GenerateReport:
    """What a generation did: rows answered and failed, what a rerun skipped, tokens, and speed."""

    output: str
    rows: int = 0
    failed: int = 0
    skipped_rows: int = 0  # input rows in blocks an earlier run had written
    rejected: int = 0  # answers not made into training records (as_training_data): failed, cut off or empty
    output_tokens: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # the first few, `file:line: reason`

    def summary(self) -> str:
        """One line for a terminal."""
        rate = self.output_tokens / self.seconds if self.seconds else 0.0
        skipped = f", {self.skipped_rows} input rows already written by an earlier run" if self.skipped_rows else ""
        if self.rejected:
            skipped += f", {self.rejected} answers rejected as training data: {self.output}.rejected.jsonl"
        return (
            f"[rayfit] generate: {self.rows} rows written to {self.output} ({self.failed} failed{skipped}); "
            f"{self.output_tokens} output tokens in {self.seconds:.0f} s ({rate:.1f} tok/s)"
        )


def request(prompt: Prompt, sample: int, settings: EngineSettings, adapter: Path | None) -> dict:
    """One engine request: the carried columns, the conversation and sampling params as JSON (one column type)."""
    return {
        "index": prompt.index,
        "sample": sample,
        "where": prompt.where,
        "fields_json": prompt.fields_json,
        "reference": prompt.reference or "",
        "adapter": str(adapter) if adapter else "",
        "messages_json": json.dumps(prompt.messages, ensure_ascii=False),
        "sampling_json": json.dumps(settings.sampling.vllm_params(settings.max_tokens, sample)),
    }


def token_request(index: int, prompt_ids: list[int], settings: EngineSettings, adapter: Path | None) -> dict:
    """One engine request for a prompt already rendered to token ids (no chat template stage)."""
    return {
        "index": index,
        "sample": 0,
        "where": "",
        "fields_json": "{}",
        "reference": "",
        "adapter": str(adapter) if adapter else "",
        "prompt_ids": list(prompt_ids),
        "sampling_json": json.dumps(settings.sampling.vllm_params(settings.max_tokens, 0)),
    }


def answer(settings: EngineSettings, model_path: str, adapters: list[Path], requests: list[dict]) -> Iterator[dict]:
    """Answered rows for `requests` (all from `request`, or all from `token_request`), as they finish: prompt, output,
    token counts, finish reason, and `error` (None, or vLLM's reason for refusing the row). One engine per replica
    serves them all, base rows and adapter rows alike; the engines stop when the rows are answered."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the progress line below says more, once
    templated = "messages_json" in requests[0]
    processor = build(settings, model_path, adapters, eos_ids(model_path), templated)
    for row in processor(ray.data.from_items(requests)).iter_rows():
        if row.get("__inference_error__"):  # Ray's error path skips postprocess: the raw row, with the reason
            yield {k: row[k] for k in CARRIED} | {
                "prompt": row.get("prompt") or "",
                "output": None,
                "prompt_tokens": None,
                "output_tokens": 0,
                "finish_reason": "error",
                "error": str(row["__inference_error__"]),
            }
        else:
            yield {k: row[k] for k in (*CARRIED, "prompt", "output", "prompt_tokens", "output_tokens", "finish_reason", "error")}


def eos_ids(model_path: str) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the generation config's."""
    from transformers import AutoTokenizer, GenerationConfig

    ids = {AutoTokenizer.from_pretrained(model_path).eos_token_id}
    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids |= set(configured if isinstance(configured, list) else [configured])
    except OSError:  # no generation_config.json
        pass
    return sorted(i for i in ids if i is not None)


@dataclass
class Job:
    """A checked generation: the settings, what runs (model folder, adapter), the prompts and the output's writer."""

    settings: GenerateSettings
    model_path: str
    adapter: Path | None
    prompts: list[Prompt]
    writer: BlockWriter
    api_key: str | None = field(default=None, repr=False)  # a teacher endpoint's, from the environment


def prepare(settings: GenerateSettings) -> Job:
    """Every check that can fail before an engine starts: the output is writable, the model (or the teacher's API
    key) and the input exist."""
    writer = BlockWriter(settings.output, settings.output_kind(), settings.block_rows, job_key(settings))
    writer.check_writable()
    if settings.teacher:
        model_path, adapter, key = settings.model, None, api_key(settings)
    else:
        (model_path, adapter), key = base_and_adapter(settings.model), None
    if settings.adapter:
        adapter = adapter_dir(settings.adapter)
    prompts = read_prompts(SourceSpec(path=settings.input, format=settings.input_format), settings.system_prompt)
    return Job(settings, model_path, adapter, prompts, writer, key)


def generate(job: Job, say: Callable[[str], None] = print) -> GenerateReport:
    """Answer every prompt of `job` into its output; a rerun after a kill continues from the written blocks."""
    settings, writer, prompts = job.settings, job.writer, job.prompts
    report = GenerateReport(output=writer.output)
    started = time.perf_counter()
    blocks = max(1, math.ceil(len(prompts) / settings.block_rows))
    done = writer.finished()
    todo = [p for p in prompts if writer.block_of(p.index) not in done]
    report.skipped_rows = len(prompts) - len(todo)
    expected = {b: 0 for b in range(blocks) if b not in done}
    buffers: dict[int, list[dict]] = {b: [] for b in expected}
    for p in todo:
        expected[writer.block_of(p.index)] += 1 if p.problem else settings.n
    by_index = {p.index: p for p in todo}
    progress = Progress(sum(expected.values()), say)

    def add(row: dict) -> None:
        out = output_row(row, by_index[row["index"]], settings)
        block = writer.block_of(row["index"])
        buffers[block].append(out)
        report.output_tokens += out["output_tokens"] or 0
        if out["error"]:
            report.failed += 1
            if len(report.failures) < 5:
                report.failures.append(f"{out['where']}: {out['error']}")
        progress.tick(out["output_tokens"] or 0)
        if len(buffers[block]) == expected[block]:
            writer.write_block(block, buffers.pop(block))

    for p in todo:
        if p.problem:
            add(failed_input(p))
    for block in [b for b, count in expected.items() if count == 0]:  # an empty input still gets its one (empty) block
        writer.write_block(block, buffers.pop(block))
    requests = [request(p, s, settings, job.adapter) for p in todo if not p.problem for s in range(settings.n)]
    if requests and settings.teacher:
        rows = answer_http(settings, requests, job.api_key)
        try:
            for row in rows:
                refuse_if_unauthorised(row, settings)  # before the row is kept: a rerun with the right key answers it
                add(row)
        finally:
            rows.close()  # stops Ray Data's execution when the run stops early
    elif requests:
        for row in answer(settings, job.model_path, [job.adapter] if job.adapter else [], requests):
            add(row)
    if settings.as_training_data:
        shape = partial(training_records, prompts={p.index: p for p in prompts}, settings=settings)
        report.rows, report.rejected = writer.assemble(blocks, shape)
    else:
        report.rows, report.rejected = writer.assemble(blocks), 0
    report.seconds = time.perf_counter() - started
    return report


def refuse_if_unauthorised(row: dict, settings: GenerateSettings) -> None:
    """Stop at the first row the teacher refused for its key: every other row would be refused the same way. The
    blocks already written are kept, so a rerun with the right key continues from them."""
    if (row.get("error") or "").startswith(REFUSED):
        raise UserError(
            f"teacher endpoint {settings.teacher.url}: row {row['where']} was {row['error']}. The run stopped there "
            f"(finished blocks are kept). Fix: export {settings.teacher.api_key_env} with a key this endpoint accepts "
            f"for model {settings.model!r}, then run the same command again."
        )


def output_row(row: dict, prompt: Prompt, settings: GenerateSettings) -> dict:
    """The row as written: position, prompt, answer, counts, finish reason, error, reference and the input's fields."""
    return {
        "index": row["index"],
        "sample": row["sample"],
        "where": row["where"],
        "prompt": row["prompt"],
        "output": row["output"],
        "prompt_tokens": row["prompt_tokens"],
        "output_tokens": row["output_tokens"],
        "finish_reason": row["finish_reason"],
        "error": row["error"],
        "reference": prompt.reference,
        "adapter": settings.adapter or (settings.model if row["adapter"] else None),
        "input": json.loads(prompt.fields_json),
    }


def failed_input(prompt: Prompt) -> dict:
    """The engine-shaped row of an input row that could not become a prompt."""
    return {
        "index": prompt.index,
        "sample": 0,
        "where": prompt.where,
        "adapter": "",
        "prompt": "",
        "output": None,
        "prompt_tokens": None,
        "output_tokens": 0,
        "finish_reason": "error",
        "error": f"input row: {prompt.problem}",
    }


def job_key(settings: GenerateSettings) -> dict:
    """What the answers depend on: a rerun with the same key may reuse written blocks."""
    return settings.model_dump(
        mode="json", exclude={"output", "replicas", "gpus_per_replica", "batch_size", "max_num_seqs", "cpu_kv_cache_gib"}
    )
