"""evaluate_run: the base model and the tuned export (or checkpoint) scored on the same held-out set, one report.

Two kinds of work, placed apart: the answers come from vLLM engine replicas on Ray Data (cluster/evaluation/answers.py,
each replica in its own placement group), and the eval loss from transformers models loaded one at a time in
`step` (in this process, or a Ray task sized by the planner: cluster/tasks.py). So a GPU held for the loss is never
one an engine waits for.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from cluster import storage
from cluster.evaluation.answers import base_and_tuned_answers
from cluster.evaluation.heldout import count_samples, generation_samples, load_eval_rows
from cluster.evaluation.intervals import intervals
from cluster.evaluation.report import enforce_gate, gate, write_report
from cluster.evaluation.scoring import eval_loss, text_metrics
from cluster.model import load
from cluster.spec import JobSpec

log = logging.getLogger(__name__)
Step = Callable[..., Any]  # step(fn, *plain_args) -> fn(*plain_args), here or in a Ray task


def in_process(fn, *args):
    """Run a step here (`rayfit evaluate`, tests)."""
    return fn(*args)


def evaluate_run(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step: Step = in_process) -> dict:
    """Score base and tuned on the spec's held-out data; write report.json, report.md and chart.png to `out_uri`.

    `tuned_uri` is an export or a checkpoint. What is scored is the objective's (its recipe's `evaluate`): every
    held-out prompt (at most evaluate.max_samples) is answered by both models through vLLM (Ray must be initialised
    unless max_samples is 0). Raises UserError when the spec's gate fails; the reports are written first so the
    failure can be read. `cache_dir` overrides where the tokenized data is cached (default: the run's data/ folder).
    """
    from cluster.objectives import recipe_for  # the recipes build on this module, so they are looked up when called

    return recipe_for(spec).evaluate(spec, tuned_uri, out_uri, cache_dir, step)


def evaluate_generations(
    spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None, step: Step = in_process
) -> dict:
    """SFT's evaluation: eval loss on the held-out rows (in `step`), and generation metrics on their prompts and
    answers (vLLM engines)."""
    cfg = spec.evaluate
    tokenizer = load.load_tokenizer(spec)  # the tokenizer the run's data was tokenized with
    rows = load_eval_rows(spec, tokenizer, cache_dir)
    samples = generation_samples(rows, tokenizer, cfg.max_samples)
    references = [s.reference for s in samples]
    started = time.time()
    base_answers, tuned_answers, generation = (
        base_and_tuned_answers(spec, tuned_uri, [s.prompt_ids for s in samples]) if samples else ([], [], None)
    )
    base, tuned = step(losses, spec.model_dump(mode="json", exclude_unset=True), tuned_uri, cache_dir)
    base |= text_metrics(base_answers, references, cfg) | {"model": spec.model.base}
    tuned |= text_metrics(tuned_answers, references, cfg) | {"model": storage.normalize(tuned_uri)}
    spans = intervals(base_answers, tuned_answers, references, cfg)
    report = {
        "run": spec.output.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "eval_rows": len(rows),  # packed rows: several samples each when data.packing is on
        "eval_samples": count_samples(rows),
        "generation_samples": len(samples),
        "max_new_tokens": cfg.max_new_tokens,
        "generation": generation,
        "base": base,
        "tuned": tuned,
        "delta": {k: tuned[k] - base[k] for k in base if isinstance(base[k], float) and isinstance(tuned.get(k), float)},
        "intervals": spans,
        "gate": gate(base, tuned, cfg, spans),
        "seconds": round(time.time() - started, 1),
    }
    answers = [
        {"prompt": tokenizer.decode(s.prompt_ids, skip_special_tokens=False), "reference": s.reference, "base": b, "tuned": t}
        for s, b, t in zip(samples, base_answers, tuned_answers, strict=True)
    ]
    report["samples"] = answers[: cfg.samples_shown]
    write_report(report, out_uri, answers)
    enforce_gate(report, out_uri)
    return report


def losses(spec: dict, tuned_uri: str, cache_dir: str | None) -> tuple[dict, dict]:
    """Eval loss and perplexity of base and tuned on every eval row, one model loaded at a time (plain arguments, so
    it runs as a Ray task too)."""
    from cluster.evaluation.models import load_base, load_tuned
    from cluster.spec import validate_spec

    job = validate_spec(spec)
    rows = load_eval_rows(job, load.load_tokenizer(job), cache_dir)
    return _loss(load_base(job), rows), _loss(load_tuned(tuned_uri, job), rows)


def _loss(model, rows) -> dict:
    """Loss on every eval row of one model, which is freed afterwards."""
    import torch

    scores = eval_loss(model, rows)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return scores
