"""Corpus BLEU (sacrebleu) as an `evaluate.Metric`, loaded with evaluate.load(<this file>): works offline."""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "Corpus-level BLEU computed by sacrebleu (13a tokenization, exponential smoothing), on a 0-100 scale."
_KWARGS = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, one per prediction.
Returns:
    bleu: corpus BLEU in [0, 100].
"""
_CITATION = "Post, Matt. A Call for Clarity in Reporting BLEU Scores. WMT 2018."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    """sacrebleu's corpus BLEU with one reference per prediction."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references):
        return {"bleu": sacrebleu.corpus_bleu(list(predictions), [list(references)]).score}
