"""ROUGE-L F-measure as an `evaluate.Metric`, loaded with evaluate.load(<this file>): no hub download, works offline."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-L: F-measure of the longest common subsequence of words between prediction and reference."
_KWARGS = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, one per prediction.
    use_stemmer: Porter-stem words before matching (default True, as in the hub `rouge` metric).
Returns:
    rougeL: mean F-measure over the pairs, in [0, 1].
"""
_CITATION = "Lin, Chin-Yew. ROUGE: A Package for Automatic Evaluation of Summaries. ACL workshop, 2004."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RougeL(evaluate.Metric):
    """Sentence-level ROUGE-L F-measure averaged over pairs (rouge_score, the library the hub metric wraps)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=False)]
        return {"rougeL": sum(scores) / len(scores) if scores else 0.0}
