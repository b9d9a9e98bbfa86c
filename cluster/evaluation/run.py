"""evaluate_run: the base model and the tuned export (or checkpoint) scored on the same held-out set, one report;
and SFT's own scores (eval loss and generation metrics)."""

from __future__ import annotations

import gc
import logging
import time

import torch

from cluster import storage
from cluster.evaluation.heldout import Sample, count_samples, generation_samples, load_eval_rows
from cluster.evaluation.intervals import intervals
from cluster.evaluation.models import load_base, load_tuned
from cluster.evaluation.report import enforce_gate, gate, write_report
from cluster.evaluation.scoring import eval_loss, generate, text_metrics
from cluster.model import load
from cluster.spec import JobSpec

log = logging.getLogger(__name__)


def evaluate_run(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None) -> dict:
    """Score base and tuned on the spec's held-out data; write report.json, report.md and chart.png to `out_uri`.

    `tuned_uri` is an export or a checkpoint. What is scored is the objective's (its recipe's `evaluate`). Raises
    UserError when the spec's gate (evaluate.max_regression on evaluate.gate_metric) fails; the reports are written
    first so the failure can be read. `cache_dir` overrides where the prepared data is cached (default: the run's
    data/ folder).
    """
    from cluster.objectives import recipe_for  # the recipes build on this module, so they are looked up when called

    return recipe_for(spec).evaluate(spec, tuned_uri, out_uri, cache_dir)


def evaluate_generations(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None) -> dict:
    """SFT's evaluation: eval loss on the held-out rows, and generation metrics on their prompts and answers."""
    cfg = spec.evaluate
    tokenizer = load.load_tokenizer(spec)  # the tokenizer the run's data was tokenized with
    rows = load_eval_rows(spec, tokenizer, cache_dir)
    samples = generation_samples(rows, tokenizer, cfg.max_samples)
    started = time.time()
    base, base_answers = _score(load_base(spec), tokenizer, rows, samples, spec)
    base["model"] = spec.model.base
    tuned, tuned_answers = _score(load_tuned(tuned_uri, spec), tokenizer, rows, samples, spec)
    tuned["model"] = storage.normalize(tuned_uri)
    spans = intervals(base_answers, tuned_answers, [s.reference for s in samples], cfg)
    report = {
        "run": spec.output.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "eval_rows": len(rows),  # packed rows: several samples each when data.packing is on
        "eval_samples": count_samples(rows),
        "generation_samples": len(samples),
        "max_new_tokens": cfg.max_new_tokens,
        "base": base,
        "tuned": tuned,
        "delta": {k: tuned[k] - base[k] for k in base if isinstance(base[k], float) and isinstance(tuned.get(k), float)},
        "intervals": spans,
        "gate": gate(base, tuned, cfg, spans),
        "samples": [
            {"prompt": tokenizer.decode(s.prompt_ids, skip_special_tokens=False), "reference": s.reference, "base": b, "tuned": t}
            for s, b, t in zip(samples, base_answers, tuned_answers, strict=False)
        ][: cfg.samples_shown],
        "seconds": round(time.time() - started, 1),
    }
    write_report(report, out_uri)
    enforce_gate(report, out_uri)
    return report


def _score(model, tokenizer, rows, samples: list[Sample], spec: JobSpec) -> tuple[dict, list[str]]:
    """Loss on every eval row and metrics on the generations of one model, which is freed afterwards."""
    cfg = spec.evaluate
    scores = eval_loss(model, rows)
    answers = generate(model, tokenizer, samples, cfg.max_new_tokens, cfg.batch_size)
    scores.update(text_metrics(answers, [s.reference for s in samples], cfg))
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return scores, answers
