"""The `data` section: where the records are, what shape they have, and how they become tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cluster.spec.base import Problem, Section

EMBEDDED_DATASETS = ("construction-faq", "construction-faq-sharegpt")
DEFAULT_EVAL_SPLIT = 0.05
Format = Literal[
    "auto",
    "alpaca",
    "messages",
    "sharegpt",
    "text",
    "prompt_completion",
    "openai_evals",
    "preference",
    "unpaired_preference",
    "prompt_only",
]
# The parts of a record that `fields:` can map to a key of the user's own records; role/content are inside messages.
MAPPABLE = (
    "text",
    "prompt",
    "completion",
    "messages",
    "conversations",
    "system",
    "instruction",
    "input",
    "output",
    "ideal",
    "chosen",
    "rejected",
    "label",
    "tools",
    "role",
    "content",
)
Role = Literal["system", "user", "assistant", "tool"]


class SourceSpec(Section):
    """One data source."""

    path: str = Field(
        description="A .jsonl/.json/.parquet/.csv file, a folder of them, a datasets.save_to_disk folder (local path, "
        "or s3://, gs:// or file:// URI), hf:<dataset id> for a Hugging Face Hub dataset (read through "
        "datasets.load_dataset; offline from the local cache), or embedded:construction-faq (ships with rayfit)."
    )
    format: Format = Field(
        "auto",
        description="Record shape (docs/data.md lists each); auto detects it per source from "
        "the keys and reports its choice. Set it when the keys fit more than one shape.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Which key of your records holds each part of a shape, e.g. {prompt: question, "
        "completion: answer} or {messages: dialog, role: speaker, content: text} (role/content are keys inside each "
        f"message). Parts: {', '.join(MAPPABLE)}. A row without a mapped key is dropped naming the key and file:line.",
    )
    roles: dict[str, Role] = Field(
        default_factory=dict,
        description="Your role names and what they mean, e.g. {human: user, bot: assistant}; "
        "system/user/assistant/tool and ShareGPT's human/gpt are known already.",
    )
    name: str | None = Field(None, description="Configuration name of an hf: dataset (datasets.load_dataset's name).")
    revision: str | None = Field(
        None, description="Git revision (branch, tag or commit) of an hf: dataset; pin it for reproducible runs."
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="Share of the training mix relative to the other sources' weights (e.g. 0.15 of general "
        "data against forgetting). No row is repeated: the source scarcest for its share is used in full and the others "
        "are sampled (seeded) to match; see cluster/data/mixing.py.",
    )
    split: str | None = Field(
        None, description="Split to read from a save_to_disk DatasetDict folder or an hf: dataset (default: train)."
    )

    def problems(self) -> list[Problem]:
        out = [
            Problem("fields", f"unknown part {k!r}.", f"map one of: {', '.join(MAPPABLE)}.")
            for k in self.fields
            if k not in MAPPABLE
        ]
        if (self.name or self.revision) and not self.path.startswith("hf:"):
            out.append(
                Problem(
                    "name" if self.name else "revision",
                    "name/revision apply to hf: datasets only.",
                    "remove them, or set path: hf:<dataset id>.",
                )
            )
        return out


class NearDuplicateSpec(Section):
    """Near-duplicate detection (MinHash LSH over character shingles of each sample's text)."""

    threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity of character 5-gram sets "
        "above which two samples are near-duplicates (case, punctuation and spacing ignored).",
    )
    train: Literal["warn", "drop"] = Field(
        "warn", description="Near-duplicate pairs within train: report them, or drop the later row of each pair."
    )
    contamination: Literal["warn", "drop", "fail"] = Field(
        "warn",
        description="Eval samples equal or near to train samples: report them, drop the train side, or stop "
        "before training with the list of pairs.",
    )


class DataSpec(Section):
    """Training and evaluation data and tokenization."""

    train: list[SourceSpec] = Field(min_length=1, description="Training sources, mixed by weight.")
    eval: list[SourceSpec] = Field(
        default_factory=list, description="Held-out sources; when empty, eval_split of train is held out."
    )
    eval_split: float = Field(
        None,
        ge=0.0,
        lt=0.5,
        description="Fraction of train held out for evaluation; default 0.05 without eval sources, 0 with them.",
    )
    max_seq_len: int = Field(2048, ge=16, le=1_048_576, description="Tokens per training row.")
    packing: bool = Field(
        True,
        description="Pack samples into max_seq_len rows; position ids restart per sample so samples never attend to each other.",
    )
    too_long: Literal["drop", "truncate"] = Field("drop", description="What happens to a sample longer than max_seq_len.")
    min_tokens: int = Field(
        2, ge=1, description="Samples with fewer assistant (trained) tokens than this are dropped as too short."
    )
    system_prompt: str | None = Field(None, description="System message added to every conversation that has none.")
    max_dropped_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="The job stops before training when more than this fraction of rows is dropped."
    )
    dedupe: bool = Field(True, description="Drop exact duplicate rows.")
    near_duplicates: NearDuplicateSpec | None = Field(
        default_factory=NearDuplicateSpec, description="Near-duplicate and contamination checks; null turns them off."
    )
    window_overlap: int = Field(
        0,
        ge=0,
        description="For text (language modeling) documents longer than max_seq_len, "
        "which are split into consecutive windows: tokens of the previous window repeated at the "
        "start of the next as context (not trained twice).",
    )
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
        for i, src in enumerate([*self.train, *self.eval]):
            where = f"train.{i}" if i < len(self.train) else f"eval.{i - len(self.train)}"
            out += [p.within(where) for p in src.problems()]
        if self.window_overlap >= self.max_seq_len // 2:
            out.append(
                Problem(
                    "window_overlap",
                    f"window_overlap {self.window_overlap} is not below half of max_seq_len "
                    f"{self.max_seq_len}, so windows would mostly repeat each other.",
                    f"set data.window_overlap below {self.max_seq_len // 2}.",
                )
            )
        if self.eval and self.eval_split > 0:
            out.append(
                Problem(
                    "eval_split",
                    "both eval sources and eval_split are given; it is unclear which is held out.",
                    "remove data.eval_split, or remove data.eval.",
                )
            )
        for i, src in enumerate([*self.train, *self.eval]):
            if src.path.startswith("embedded:") and src.path.removeprefix("embedded:") not in EMBEDDED_DATASETS:
                where = f"train.{i}" if i < len(self.train) else f"eval.{i - len(self.train)}"
                out.append(
                    Problem(
                        f"{where}.path",
                        f"unknown embedded dataset {src.path!r}.",
                        f"use one of: {', '.join('embedded:' + d for d in EMBEDDED_DATASETS)}.",
                    )
                )
        return out
