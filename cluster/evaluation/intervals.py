"""95% confidence intervals by bootstrap over held-out rows, and whether a base-vs-tuned difference is noise.

Base and tuned answer the same rows, so the difference is bootstrapped paired: each resample draws row indices once
and scores both models on them. The metrics are the report's own: ROUGE-L and exact match per row (their mean is
the metric), BLEU recomputed on each resample (it is a corpus score), format compliance per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cluster.evaluation.scoring import compliant, normalize
from cluster.spec import EvaluateSpec

RESAMPLES = 1000
LEVEL = 0.95


def row_scores(answers: Sequence[str], references: Sequence[str], cfg: EvaluateSpec) -> dict[str, Callable]:
    """Metric name -> score(rows), a function of resampled row indices (a numpy array of shape (draws, n))."""
    import numpy as np
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = np.array([scorer.score(r, a)["rougeL"].fmeasure for a, r in zip(answers, references, strict=True)])
    exact = np.array([normalize(a) == normalize(r) for a, r in zip(answers, references, strict=True)], dtype=float)
    # sacrebleu's own route for significance tests: sentence statistics once, corpus BLEU from their sums per draw.
    bleu = BLEU()
    stats = np.array(bleu._extract_corpus_statistics(list(answers), [list(references)]))
    out = {
        "rouge_l": lambda rows: rouge[rows].mean(axis=1),
        "bleu": lambda rows: np.array([bleu._compute_score_from_stats(list(s)).score for s in stats[rows].sum(axis=1)]),
        "exact_match": lambda rows: exact[rows].mean(axis=1),
    }
    if cfg.format_regex is not None or cfg.json_schema is not None:
        ok = np.array([compliant(a, cfg) for a in answers], dtype=float)
        out["format_compliance"] = lambda rows: ok[rows].mean(axis=1)
    return out


def mean_scores(per_row: dict[str, Sequence[float]]) -> dict[str, Callable]:
    """Metric name -> score(rows) for metrics that are the mean of one score per row (GRPO's rewards, pass rate)."""
    import numpy as np

    arrays = {name: np.asarray(values, dtype=float) for name, values in per_row.items()}
    return {name: (lambda rows, a=a: a[rows].mean(axis=1)) for name, a in arrays.items()}


def intervals(
    base: list[str], tuned: list[str], references: list[str], cfg: EvaluateSpec, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, dict]:
    """Per metric: the base and tuned 95% intervals, the interval of tuned - base, and whether it holds 0 (noise)."""
    if not references:
        return {}
    scores = row_scores(base, references, cfg), row_scores(tuned, references, cfg)
    return paired(*scores, len(references), resamples, seed)


def paired(
    base_scores: dict[str, Callable], tuned_scores: dict[str, Callable], n: int, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, dict]:
    """The paired bootstrap of `intervals` over `n` rows for any metrics given as score(rows) functions."""
    import numpy as np

    if not n:
        return {}
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    out = {}
    for name, score in base_scores.items():
        b, t = score(draws), tuned_scores[name](draws)
        difference = _interval(t - b)
        out[name] = {
            "base": _interval(b),
            "tuned": _interval(t),
            "difference": difference,
            "within_noise": bool(difference[0] <= 0 <= difference[1]),
        }
    return out


def _interval(values) -> list[float]:
    """The percentile interval holding LEVEL of the bootstrap values."""
    import numpy as np

    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]
