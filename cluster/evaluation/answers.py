"""Base and tuned answers to the held-out prompts, on vLLM engines through Ray Data (cluster/generation).

Which weights answer for each side:
- a LoRA run (its checkpoint, or an export whose source checkpoint is still there): ONE engine on the base, base rows
  without the adapter and tuned rows with it;
- a full fine-tune, a QLoRA run (its adapter learned to correct the 4-bit base, so the export merged the way the
  spec merges is what was tuned) or an adapter vLLM cannot load (DoRA, modules_to_save): the base's engine, then
  the tuned model's (an export; a checkpoint is merged into a temporary export first).

The prompts are token ids cut from the rows training tokenized (cluster/evaluation/heldout.py), so both models see
exactly the chat template training used. Needs Ray initialised; the engines stop when their rows are answered.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from cluster import storage
from cluster.generation.answers import Answerer, Answers, answer_prompts
from cluster.generation.settings import EngineSettings, job_engine
from cluster.manifest import read_manifest
from cluster.model.artefacts import base_and_adapter, has_file, resolve_model
from cluster.spec import JobSpec


@dataclass
class Compared:
    """The two answerers, a line saying what each is, and temporary folders to remove afterwards."""

    base: Answerer
    tuned: Answerer
    how: str
    temporary: list[str]


def engine_settings(spec: JobSpec) -> EngineSettings:
    """Evaluation's engines: greedy, evaluate.max_new_tokens, the evaluate section's replicas and engine options."""
    cfg = spec.evaluate
    return job_engine(
        spec,
        cfg.max_new_tokens,
        cfg.replicas,
        cfg.batch_size,
        enforce_eager=cfg.enforce_eager,
        engine_kwargs=cfg.engine_kwargs,
    )


def start_answerer(spec: JobSpec, start_uri: str | None = None) -> Answerer:
    """The model a run starts from: `start_uri` (a warm start's export or checkpoint), else the spec's base."""
    if start_uri:
        folder, adapter = base_and_adapter(start_uri)
        return Answerer(folder, adapter)
    return Answerer(resolve_model(spec.model.base), None, spec.model.revision)


def compared_models(spec: JobSpec, tuned_uri: str, start_uri: str | None = None) -> Compared:
    """Base (the spec's base, or `start_uri` for a warm start) and tuned (an export or checkpoint) as answerers."""
    temporary: list[str] = []
    base = start_answerer(spec, start_uri)
    uri = storage.normalize(tuned_uri)
    manifest = read_manifest(uri)
    checkpoint = manifest.get("source_checkpoint") if manifest.get("kind") == "export" else uri
    if manifest.get("method") == "lora" and checkpoint and has_file(checkpoint, "manifest.json") and _vllm_lora(manifest):
        folder, adapter = base_and_adapter(checkpoint)  # the adapter checked against its manifest, on its base
        if folder == base.folder and base.adapter is None:
            return Compared(base, Answerer(folder, adapter, base.revision), "one engine: base, and base + adapter", temporary)
        return Compared(base, Answerer(folder, adapter), "two engines: base, then tuned base + adapter", temporary)
    if manifest.get("kind") == "export":
        return Compared(base, Answerer(resolve_model(uri)), "two engines: base, then the tuned export", temporary)
    from cluster.merge import merge_checkpoint

    scratch = tempfile.mkdtemp(prefix="rayfit-eval-merge-")
    temporary.append(scratch)
    export = merge_checkpoint(uri, into=spec.merge.into, out_uri=f"{scratch}/export")
    return Compared(base, Answerer(resolve_model(export)), "two engines: base, then the checkpoint merged", temporary)


def base_and_tuned_answers(
    spec: JobSpec, tuned_uri: str, prompt_ids: list[list[int]], start_uri: str | None = None
) -> tuple[list[str], list[str], dict]:
    """(base answers, tuned answers, what answered) for every prompt, greedy; an answer that failed is "" and is
    counted in `failed` (a prompt longer than the engine's context, say)."""
    compared = compared_models(spec, tuned_uri, start_uri)
    try:
        answers: Answers = answer_prompts(prompt_ids, [compared.base, compared.tuned], engine_settings(spec))
    finally:
        for folder in compared.temporary:
            shutil.rmtree(folder, ignore_errors=True)
    info = {
        "engine": "vLLM on Ray Data (ray.data.llm)",
        "how": compared.how,
        "engines": answers.engines,
        "output_tokens": answers.output_tokens,
        "failed": len(answers.failures),
        "failures": answers.failures[:5],
    }
    return answers.texts[0], answers.texts[1], info


def _vllm_lora(manifest: dict) -> bool:
    """Whether vLLM can load this run's adapter: plain LoRA (no DoRA, no fully trained modules_to_save)."""
    config = manifest.get("adapter_config") or {}
    return not config.get("use_dora") and not config.get("modules_to_save")
