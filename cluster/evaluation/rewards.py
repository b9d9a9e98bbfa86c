"""Evaluation of a GRPO run: base and tuned answer the held-out prompts, and the run's own graders score them.

Reported for both models, beside the generation metrics every run has (format compliance when evaluate.format_regex
or json_schema is set):
- reward: the graders' weighted mean over the answers (train.grpo.weights), the number training raised;
- reward_<grader name>: each grader's mean;
- pass_rate: the share of answers that every grader passes (at or above its pass_threshold);
each with a 95% paired bootstrap interval over the prompts, so `evaluate.gate_metric: reward` (or pass_rate) can
gate on it with max_regression or min_improvement. Answers are greedy, up to evaluate.max_new_tokens tokens.
"""

from __future__ import annotations

import json
import time

from cluster import storage
from cluster.errors import UserError
from cluster.evaluation.heldout import Sample, data_cache_dir
from cluster.evaluation.intervals import mean_scores, paired
from cluster.evaluation.report import enforce_gate, gate, write_report
from cluster.evaluation.scoring import compliant
from cluster.spec import JobSpec


def prompt_samples(spec: JobSpec, tokenizer, cache_dir: str | None) -> tuple[list[Sample], list[dict], list[str]]:
    """The held-out prompts rendered for generation, their items and their rows (file:line), in eval-set order."""
    from cluster.data import prepare_datasets

    rows = prepare_datasets(spec, tokenizer, cache_dir or data_cache_dir(spec)).eval()
    if rows is None or len(rows) == 0:
        raise UserError(
            "evaluation needs held-out prompts, but the prepared data has none. Fix: set data.eval_split (e.g. 0.1) "
            "or add data.eval sources."
        )
    limit = spec.evaluate.max_samples or len(rows)
    samples, items, where = [], [], []
    for row in rows.select(range(min(limit, len(rows)))):
        text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        samples.append(Sample(tokenizer(text, add_special_tokens=False)["input_ids"], ""))
        items.append(json.loads(row["item_json"]))
        where.append(row["where"])
    return samples, items, where


def grade(spec: JobSpec, answers: list[str], items: list[dict], where: list[str]) -> tuple[dict, dict[str, list[float]]]:
    """The report's scores of one model's answers, and the per-prompt scores the intervals resample."""
    from cluster.graders.grading import GraderFailures, Grading

    g = spec.train.grpo
    with Grading(g.graders, g.weights, max_failures=g.max_grader_failures) as grading:
        try:
            scored = [grading.score(a, item, w) for a, item, w in zip(answers, items, where, strict=True)]
        except GraderFailures as e:
            raise GraderFailures(f"evaluation: {e}") from None
    per_row = {"reward": [s.reward for s in scored], "pass_rate": [float(s.passed) for s in scored]}
    per_row |= {f"reward_{x.name}": [s.scores[x.name] for s in scored] for x in g.graders}
    scores = {name: sum(values) / len(values) for name, values in per_row.items()}
    cfg = spec.evaluate
    if cfg.format_regex is not None or cfg.json_schema is not None:
        scores["format_compliance"] = sum(compliant(a, cfg) for a in answers) / len(answers)
    scores["grader_failures"] = len(grading.failures)
    return scores, per_row


def evaluate_rewards(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None = None) -> dict:
    """Score the base and tuned models' answers to the held-out prompts with the run's graders; write report.json,
    report.md and chart.png to `out_uri`, then apply the gate. The answers come from vLLM engines on Ray Data, as
    every evaluation's (cluster/evaluation/answers.py: a LoRA run's from one engine); Ray must be initialised."""
    from cluster.evaluation.answers import base_and_tuned_answers
    from cluster.model.load import load_tokenizer

    cfg = spec.evaluate
    tokenizer = load_tokenizer(spec)
    samples, items, where = prompt_samples(spec, tokenizer, cache_dir)
    started = time.time()
    base_answers, tuned_answers, generation = base_and_tuned_answers(spec, tuned_uri, [s.prompt_ids for s in samples])
    answers, scores, per_row = {"base": base_answers, "tuned": tuned_answers}, {}, {}
    for name in ("base", "tuned"):
        scores[name], per_row[name] = grade(spec, answers[name], items, where)
    base = {**scores["base"], "model": spec.model.base}
    tuned = {**scores["tuned"], "model": storage.normalize(tuned_uri)}
    spans = paired(mean_scores(per_row["base"]), mean_scores(per_row["tuned"]), len(samples))
    report = {
        "run": spec.output.name,
        "objective": "grpo",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "eval_rows": len(samples),
        "generation_samples": len(samples),
        "max_new_tokens": cfg.max_new_tokens,
        "graders": [x.name for x in spec.train.grpo.graders],
        "generation": generation,
        "base": base,
        "tuned": tuned,
        "delta": {k: tuned[k] - base[k] for k in base if isinstance(base[k], float) and isinstance(tuned.get(k), float)},
        "intervals": spans,
        "gate": gate(base, tuned, cfg, spans),
        "samples": [
            {"prompt": tokenizer.decode(s.prompt_ids), "reference": json.dumps(item), "base": b, "tuned": t}
            for s, item, b, t in zip(samples, items, answers["base"], answers["tuned"], strict=True)
        ][: cfg.samples_shown],
        "seconds": round(time.time() - started, 1),
    }
    write_report(report, out_uri)
    enforce_gate(report, out_uri)
    return report
