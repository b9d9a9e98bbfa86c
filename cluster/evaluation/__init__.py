"""Base versus tuned on the held-out set: eval loss, perplexity, ROUGE-L, BLEU, exact match, format compliance.

Public API:
    evaluate_run(spec, tuned_uri, out_uri, cache_dir=None) -> dict   writes report.json, report.md, chart.png;
                                                                      raises UserError when the spec's gate fails
    base_and_tuned_answers(spec, tuned_uri, prompt_ids) -> (base answers, tuned answers, info)   vLLM on Ray Data
    eval_loss(model, rows) -> dict, text_metrics(answers, references, cfg) -> dict   the pieces, for notebooks

The held-out rows come from cluster.data.prepare_datasets (the same eval split and tokenization as training).
ROUGE-L and BLEU are local `evaluate.Metric` modules in metrics/, loaded by path: no hub download.
"""

from cluster.evaluation.answers import base_and_tuned_answers
from cluster.evaluation.heldout import generation_samples, load_eval_rows
from cluster.evaluation.models import load_base, load_tuned
from cluster.evaluation.run import evaluate_run
from cluster.evaluation.scoring import eval_loss, text_metrics

__all__ = [
    "base_and_tuned_answers",
    "eval_loss",
    "evaluate_run",
    "generation_samples",
    "load_base",
    "load_eval_rows",
    "load_tuned",
    "text_metrics",
]
