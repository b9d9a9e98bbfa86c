"""`text_similarity`: fuzzy_match, bleu, gleu and rouge_1..rouge_5 / rouge_l between the rendered input and reference."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase
from cluster.graders.template import render
from cluster.spec.base import Problem

# OpenAI's evaluation_metric values; cosine needs an embeddings model and meteor nltk's WordNet download.
Metric = Literal[
    "cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"
]
UNAVAILABLE = {"cosine": "needs an embeddings model", "meteor": "needs nltk's WordNet data, which is downloaded from a hub"}


class Grader(GraderBase):
    """OpenAI's TextSimilarityGrader: the metric's value in [0, 1]; a sample passes at pass_threshold."""

    TEMPLATES = ("input", "reference")

    type: Literal["text_similarity"] = Field(description="Always text_similarity.")
    input: str = Field(description="The text graded, usually {{sample.output_text}}.")
    reference: str = Field(description="The text graded against, usually {{item.FIELD}}.")
    evaluation_metric: Metric = Field(
        description="fuzzy_match (difflib's ratio), bleu (sacrebleu sentence BLEU / 100), gleu (nltk), "
        "rouge_1..rouge_5, rouge_l (rouge_score F1)."
    )

    def problems(self):
        out = super().problems()
        if self.evaluation_metric in UNAVAILABLE:
            out.append(
                Problem(
                    "evaluation_metric",
                    f"{self.evaluation_metric} is not available in rayfit ({UNAVAILABLE[self.evaluation_metric]}).",
                    "use fuzzy_match, bleu, gleu, rouge_1 ... rouge_5 or rouge_l.",
                )
            )
        return out


def similarity(metric: str, text: str, reference: str) -> float:
    """The metric's value for one text against one reference, in [0, 1]."""
    if metric == "fuzzy_match":
        return difflib.SequenceMatcher(None, text, reference, autojunk=False).ratio()
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(text, [reference]).score / 100
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return sentence_gleu([reference.split()], text.split())
    from rouge_score import rouge_scorer

    key = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
    return rouge_scorer.RougeScorer([key]).score(reference, text)[key].fmeasure


def scorer(grader: Grader):
    """The grader as a function of (sample, item)."""
    metric = grader.evaluation_metric
    return lambda sample, item: similarity(metric, render(grader.input, sample, item), render(grader.reference, sample, item))
