"""Evaluation of a DPO/KTO run on held-out pairs: the starting model against the tuned one, in the same report.

With the starting model as reference, the implicit reward of an answer y is beta * (log p_tuned(y|x) - log p_start(y|x))
(the DPO paper's). Reported for both models:
- preference_accuracy: pairs whose chosen reward beats the rejected one (ties count half, so the start scores 0.5);
- reward_margin: mean chosen-minus-rejected reward; eval_loss: mean DPO loss -log sigmoid(margin) (log 2 at the start);
- logp_accuracy: pairs whose chosen answer is more likely than the rejected one, a reference-free preference;
- chosen_logp: mean log-probability per token of the chosen answers (perplexity is its exp(-x));
plus the generation metrics of SFT runs (ROUGE-L, BLEU, ...) with the chosen answer as reference.
"""

from __future__ import annotations

import math
import time

import torch

from cluster import storage
from cluster.errors import UserError
from cluster.evaluation.heldout import Sample, load_eval_rows
from cluster.evaluation.report import enforce_gate, gate, write_report
from cluster.evaluation.scoring import text_metrics
from cluster.spec import JobSpec


def pairs_of(rows) -> list[dict]:
    """Held-out pairs: DPO's rows as they are; KTO's feedback rows (`label`) paired up per prompt (a thumbs-up and a
    thumbs-down answer) where possible."""
    if "chosen" in rows.column_names:
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    up, down = {}, {}
    for r in rows:
        (up if r["label"] else down).setdefault(str(r["prompt"]), (r["prompt"], r["completion"]))
    return [{"prompt": up[k][0], "chosen": up[k][1], "rejected": down[k][1]} for k in up if k in down]


def tokenized(pair: dict, tokenizer) -> dict:
    """Prompt ids and the chosen/rejected answer ids, rendered with TRL's chat templating as the trainers do."""
    from trl.data_utils import apply_chat_template

    text = apply_chat_template(pair, tokenizer)
    prompt = tokenizer(text["prompt"], add_special_tokens=False)["input_ids"]
    out = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        full = tokenizer(text["prompt"] + text[key], add_special_tokens=False)["input_ids"]
        out[key] = full[len(prompt) :]
    return out


@torch.no_grad()
def answer_logps(model, items: list[dict]) -> list[tuple[float, float, int]]:
    """(sum log p(chosen|prompt), sum log p(rejected|prompt), chosen tokens) of each tokenized pair."""
    device = next(model.parameters()).device
    out = []
    for it in items:
        sums = []
        for key in ("chosen", "rejected"):
            ids = torch.tensor([it["prompt"] + it[key]], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, len(it["prompt"]) - 1 : -1].float()
            sums.append(torch.log_softmax(logits, -1).gather(-1, ids[0, len(it["prompt"]) :, None]).sum().item())
        out.append((sums[0], sums[1], len(it["chosen"])))
    return out


def preference_scores(start: list[tuple], model: list[tuple], beta: float) -> dict:
    """Metrics of a model's log-probs against the starting model's (see the module docstring)."""
    margins = [beta * ((mc - sc) - (mr - sr)) for (sc, sr, _), (mc, mr, _) in zip(start, model, strict=True)]
    tokens = sum(n for _, _, n in model)
    chosen_logp = sum(c for c, _, _ in model) / tokens
    return {
        "preference_accuracy": sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "eval_loss": sum(-torch.nn.functional.logsigmoid(torch.tensor(m)).item() for m in margins) / len(margins),
        "logp_accuracy": sum(c > r for c, r, _ in model) / len(model),
        "chosen_logp": chosen_logp,
        "perplexity": math.exp(min(-chosen_logp, 50.0)),
        "eval_tokens": tokens,
    }


def evaluate_preference_run(spec: JobSpec, tuned_uri: str, out_uri: str, cache_dir: str | None, beta: float, step=None) -> dict:
    """Score the starting and tuned models on held-out pairs with the run's `beta`; write report.json/.md and
    chart.png like SFT runs.

    The answers come from vLLM engines (cluster/evaluation/answers.py); the log-probs from transformers models in
    `step` (this process, or the planner-sized Ray task of cluster/tasks.py)."""
    from cluster.evaluation.answers import base_and_tuned_answers
    from cluster.evaluation.run import in_process
    from cluster.model.load import load_tokenizer
    from cluster.training.warm_start import resolve_init

    cfg = spec.evaluate
    tokenizer = load_tokenizer(spec)
    pairs = pairs_of(load_eval_rows(spec, tokenizer, cache_dir))
    if not pairs:
        raise UserError(
            "preference evaluation needs held-out pairs (a thumbs-up and a thumbs-down answer to the same "
            "prompt for KTO), and there are none. Fix: raise data.eval_split or add data.eval sources."
        )
    items = [tokenized(p, tokenizer) for p in pairs]
    samples = [Sample(it["prompt"], p["chosen"][-1]["content"]) for it, p in zip(items, pairs, strict=True)][: cfg.max_samples]
    started = time.time()
    start = spec.model.init_from and resolve_init(spec.model.init_from)[0]  # a warm start is compared with its start
    base_answers, tuned_answers, generation = (
        base_and_tuned_answers(spec, tuned_uri, [s.prompt_ids for s in samples], start or None) if samples else ([], [], None)
    )
    step = step or in_process
    base_logps, tuned_logps = step(preference_logps, spec.model_dump(mode="json", exclude_unset=True), tuned_uri, cache_dir)
    base = {
        **preference_scores(base_logps, base_logps, beta),
        "model": start or spec.model.base,
        **text_metrics(base_answers, [s.reference for s in samples], cfg),
    }
    tuned = {
        **preference_scores(base_logps, tuned_logps, beta),
        "model": storage.normalize(tuned_uri),
        **text_metrics(tuned_answers, [s.reference for s in samples], cfg),
    }
    report = {
        "run": spec.output.name,
        "objective": spec.train.objective,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "eval_rows": len(pairs),
        "generation_samples": len(samples),
        "max_new_tokens": cfg.max_new_tokens,
        "generation": generation,
        "base": base,
        "tuned": tuned,
        "delta": {k: tuned[k] - base[k] for k in base if isinstance(base[k], float) and isinstance(tuned.get(k), float)},
        "gate": gate(base, tuned, cfg),
        "samples": [
            {"prompt": tokenizer.decode(s.prompt_ids), "reference": s.reference, "base": b, "tuned": t}
            for s, b, t in zip(samples, base_answers, tuned_answers, strict=False)
        ][: cfg.samples_shown],
        "seconds": round(time.time() - started, 1),
    }
    write_report(report, out_uri)
    enforce_gate(report, out_uri)
    return report


def preference_logps(spec: dict, tuned_uri: str, cache_dir: str | None) -> tuple[list[tuple], list[tuple]]:
    """Log-probs of every held-out pair under the starting model and the tuned one, one loaded at a time (plain
    arguments, so it runs as a Ray task too)."""
    from cluster.evaluation.models import load_base, load_tuned
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec
    from cluster.training.warm_start import resolve_init

    job = validate_spec(spec)
    tokenizer = load_tokenizer(job)
    items = [tokenized(p, tokenizer) for p in pairs_of(load_eval_rows(job, tokenizer, cache_dir))]
    start = job.model.init_from and resolve_init(job.model.init_from)[0]
    out = []
    for load in (lambda: load_tuned(start, job) if start else load_base(job), lambda: load_tuned(tuned_uri, job)):
        model = load()
        out.append(answer_logps(model, items))
        del model
    return out[0], out[1]
