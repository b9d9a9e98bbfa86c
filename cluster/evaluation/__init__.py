"""Base versus tuned on the held-out set: eval loss, perplexity, ROUGE-L, BLEU, exact match, format compliance.

Public API:
    evaluate_run(spec, tuned_uri, out_uri, cache_dir=None) -> dict   writes report.json, report.md, chart.png;
                                                                      raises UserError when the spec's gate fails
    eval_loss(model, rows) -> dict, generate(model, tokenizer, samples, max_new_tokens, batch_size) -> list[str],
    text_metrics(answers, references, cfg) -> dict                    the pieces, for benchmarks and notebooks

The held-out rows come from cluster.data.prepare_datasets (the same eval split and tokenization as training).
ROUGE-L and BLEU are local `evaluate.Metric` modules in metrics/, loaded by path: no hub download.
"""

from cluster.evaluation.heldout import generation_samples, load_eval_rows
from cluster.evaluation.models import load_base, load_tuned
from cluster.evaluation.run import evaluate_run
from cluster.evaluation.scoring import eval_loss, generate, text_metrics

__all__ = [
    "eval_loss",
    "evaluate_run",
    "generate",
    "generation_samples",
    "load_base",
    "load_eval_rows",
    "load_tuned",
    "text_metrics",
]
