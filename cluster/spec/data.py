"""The `data` section: where the records are, what shape they have, and how they become tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cluster.spec.base import Problem, Section

EMBEDDED_DATASETS = ("construction-faq", "construction-faq-sharegpt")
DEFAULT_EVAL_SPLIT = 0.05
Format = Literal["auto", "alpaca", "messages", "sharegpt", "text"]


class SourceSpec(Section):
    """One data source."""

    path: str = Field(
        description="A .jsonl/.json/.parquet/.csv file, a datasets.save_to_disk folder, a local path or an "
        "s3://, gs:// or file:// URI, or embedded:construction-faq (ships with rayfit)."
    )
    format: Format = Field("auto", description="Record shape; auto detects it per source and reports its choice.")
    weight: float = Field(
        1.0, gt=0, description="Share of the training mix relative to the other sources' weights (e.g. 0.15 of general "
        "data against forgetting). No row is repeated: the source scarcest for its share is used in full and the others "
        "are sampled (seeded) to match; see cluster/data/mixing.py.")
    split: str | None = Field(None, description="Split to read from a save_to_disk DatasetDict folder.")


class DataSpec(Section):
    """Training and evaluation data and tokenization."""

    train: list[SourceSpec] = Field(min_length=1, description="Training sources, mixed by weight.")
    eval: list[SourceSpec] = Field(default_factory=list, description="Held-out sources; when empty, eval_split of train is held out.")
    eval_split: float = Field(
        None, ge=0.0, lt=0.5,
        description="Fraction of train held out for evaluation; default 0.05 without eval sources, 0 with them.")
    max_seq_len: int = Field(2048, ge=16, le=1_048_576, description="Tokens per training row.")
    packing: bool = Field(True, description="Pack samples into max_seq_len rows; position ids restart per sample so samples never attend to each other.")
    too_long: Literal["drop", "truncate"] = Field("drop", description="What happens to a sample longer than max_seq_len.")
    min_tokens: int = Field(2, ge=1, description="Samples with fewer assistant (trained) tokens than this are dropped as too short.")
    system_prompt: str | None = Field(None, description="System message added to every conversation that has none.")
    max_dropped_fraction: float = Field(0.2, ge=0.0, le=1.0, description="The job stops before training when more than this fraction of rows is dropped.")
    dedupe: bool = Field(True, description="Drop exact duplicate rows.")
    num_proc: int | None = Field(None, ge=1, description="Processes for tokenization; default: the CPUs available.")
    seed: int = Field(42, description="Seed for the eval split and source mixing.")

    @model_validator(mode="before")
    @classmethod
    def _resolve_eval_split(cls, data):
        """The one place where eval_split's default is chosen: hold out 5% of train unless eval sources are given."""
        if isinstance(data, dict) and data.get("eval_split") is None:
            return {**data, "eval_split": 0.0 if data.get("eval") else DEFAULT_EVAL_SPLIT}
        return data

    def problems(self) -> list[Problem]:
        out = []
        if self.eval and self.eval_split > 0:
            out.append(Problem("eval_split", "both eval sources and eval_split are given; it is unclear which is held out.",
                               "remove data.eval_split, or remove data.eval."))
        for i, src in enumerate([*self.train, *self.eval]):
            if src.path.startswith("embedded:") and src.path.removeprefix("embedded:") not in EMBEDDED_DATASETS:
                where = f"train.{i}" if i < len(self.train) else f"eval.{i - len(self.train)}"
                out.append(Problem(f"{where}.path", f"unknown embedded dataset {src.path!r}.",
                                   f"use one of: {', '.join('embedded:' + d for d in EMBEDDED_DATASETS)}."))
        return out
