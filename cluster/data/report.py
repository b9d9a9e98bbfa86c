"""The data quality report: what was read, what was dropped and why (with file:line), lengths, packing, one example."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from cluster.data.drops import REASONS, Drop

EXAMPLES_PER_REASON = 5


class Examples(BaseModel):
    """A count and up to EXAMPLES_PER_REASON `file:line (detail)` examples."""

    count: int = 0
    examples: list[str] = Field(default_factory=list)

    def add(self, text: str) -> None:
        """Count one more; keep it as an example while there is room."""
        self.count += 1
        if len(self.examples) < EXAMPLES_PER_REASON:
            self.examples.append(text)


class SourceSummary(BaseModel):
    """One source: its format (and whether it was detected), rows read, kept after checks, held out, used after mixing."""

    path: str
    format: str
    detected: bool
    rows_read: int
    rows_kept: int = 0
    rows_held_out: int = 0
    rows_used: int = 0


class DataReport(BaseModel):
    """Everything the data check found; `to_json()` for machines, `to_table()` for people."""

    hash: str | None = Field(None, description="Content hash of sources + tokenizer + data settings (the cache key).")
    sources: list[SourceSummary] = Field(default_factory=list)
    eval_sources: list[SourceSummary] = Field(default_factory=list)
    rows_read: int = Field(0, description="Rows (records) read from the sources, the unit every drop is counted in.")
    rows_kept: int = Field(0, description="Rows that reach train or eval (a long document split into windows is one row).")
    rows_dropped: int = Field(0, description="Rows dropped, by reason in `dropped`; a window is never dropped alone.")
    dropped_fraction: float = 0.0
    max_dropped_fraction: float = 1.0
    dropped: dict[str, Examples] = Field(default_factory=dict, description="Reason -> count and file:line examples.")
    truncated: int = 0
    token_lengths: dict[str, float] = Field(
        default_factory=dict,
        description="Rendered sample lengths in tokens before the length policy: min, p50, p90, p95, p99, max, mean.",
    )
    eval_from: str = "none"
    train_samples: int = Field(0, description="Training samples: kept rows, each window of a split document counted.")
    eval_samples: int = Field(0, description="Held-out samples, counted like train_samples.")
    train_tokens: int = 0
    trained_tokens: int = 0
    contamination: Examples = Field(default_factory=Examples, description="Eval samples that also appear in train.")
    contamination_pairs: Examples = Field(
        default_factory=Examples,
        description="Train <-> eval pairs equal or near (MinHash), as `train file:line <-> eval file:line`.",
    )
    near_duplicates: Examples = Field(default_factory=Examples, description="Near-duplicate pairs within train.")
    documents_split: int = Field(0, description="Text documents longer than max_seq_len, split into windows.")
    windows: int = Field(0, description="Windows made from those documents.")
    warnings: list[str] = Field(default_factory=list, description="Things to know before training (e.g. few rows).")
    answers: dict[str, float] = Field(
        default_factory=dict,
        description="Short-answer data: the most common answers "
        "and their share of the training samples, so label imbalance is visible.",
    )
    packing: bool = False
    max_seq_len: int = 0
    train_rows: int = Field(0, description="Packed training rows of max_seq_len tokens (samples when packing is off).")
    packing_efficiency: float = 0.0
    padded_efficiency: float = 0.0
    example_where: str = ""
    example: list[tuple[str, bool]] = Field(default_factory=list, description="Rendered sample as (text, trained) segments.")

    def add_drop(self, drop: Drop) -> None:
        """Record one dropped row under its reason."""
        self.dropped.setdefault(drop.reason, Examples()).add(f"{drop.where}" + (f" ({drop.detail})" if drop.detail else ""))

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def to_table(self) -> str:
        """The report as aligned text for a terminal."""
        lines = ["Sources"]
        for kind, group in (("train", self.sources), ("eval", self.eval_sources)):
            for s in group:
                how = "detected" if s.detected else "given"
                lines.append(
                    f"  {kind:5} {s.path}  format={s.format} ({how})  read={s.rows_read} kept={s.rows_kept} "
                    f"held out for eval={s.rows_held_out} used={s.rows_used}"
                )
        lines += [
            "",
            f"Rows: read {self.rows_read}, kept {self.rows_kept}, dropped {self.rows_dropped} "
            f"({self.dropped_fraction:.1%}; limit {self.max_dropped_fraction:.1%}), truncated {self.truncated}",
        ]
        for reason in sorted(self.dropped, key=lambda r: REASONS.index(r) if r in REASONS else len(REASONS)):
            ex = self.dropped[reason]
            lines.append(f"  {reason:18} {ex.count:6}")
            lines += [f"      {e}" for e in ex.examples]
        if self.documents_split:
            lines += [
                "",
                f"Long documents: {self.documents_split} rows split into {self.windows} windows (samples) of at most "
                f"{self.max_seq_len} tokens (every token kept; a short tail window reaches back over the previous "
                "one as context)",
            ]
        for title, ex in (
            ("Near-duplicate pairs in train", self.near_duplicates),
            ("Train/eval pairs equal or near (contamination)", self.contamination_pairs),
        ):
            if ex.count:
                lines += ["", f"{title}: {ex.count}"] + [f"      {e}" for e in ex.examples]
        if self.answers:
            lines += ["", "Most common answers: " + ", ".join(f"{a!r} {share:.0%}" for a, share in self.answers.items())]
        if self.token_lengths:
            tl = self.token_lengths
            stats = "  ".join(f"{k}={tl[k]:.0f}" for k in ("min", "p50", "p90", "p95", "p99", "max", "mean") if k in tl)
            lines += ["", f"Token lengths (before the length policy): {stats}"]
        lines += [
            "",
            f"Train: {self.train_samples} samples, {self.train_tokens} tokens ({self.trained_tokens} trained); "
            f"eval: {self.eval_samples} samples (from {self.eval_from})",
            f"Eval samples also in train (contamination): {self.contamination.count}"
            + (" -- eval loss will look better than the model is" if self.contamination.count else ""),
        ]
        lines += [f"      {e}" for e in self.contamination.examples]
        if self.packing:
            lines.append(
                f"Packing: {self.train_samples} samples in {self.train_rows} packed rows of {self.max_seq_len} tokens, "
                f"efficiency {self.packing_efficiency:.1%} (padded to max_seq_len: {self.padded_efficiency:.1%})"
            )
        else:
            lines.append(
                f"Packing off: {self.train_rows} training rows (one per sample), padded-to-max_seq_len efficiency "
                f"{self.padded_efficiency:.1%}"
            )
        lines += [f"Warning: {w}" for w in self.warnings]
        if self.example:
            lines += [
                "",
                f"Example ({self.example_where}); trained tokens are between [[ and ]]:",
                "".join(f"[[{text}]]" if trained else text for text, trained in self.example),
            ]
        return "\n".join(lines)
