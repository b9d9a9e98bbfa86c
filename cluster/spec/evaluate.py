"""The `evaluate` section: base versus tuned on held-out data."""

from __future__ import annotations

from pydantic import Field

from cluster.spec.base import Section


class EvaluateSpec(Section):
    """Whether and how the finetune job compares base and tuned models at its end."""

    enabled: bool = Field(False, description="Compare base and tuned on the eval set when training ends.")
    max_samples: int = Field(64, ge=1, description="Eval records scored with generation metrics (ROUGE-L, BLEU, exact match).")
    max_new_tokens: int = Field(128, ge=1, description="Greedy generation length for generation metrics.")
    format_regex: str | None = Field(None, description="Regex a compliant answer must fully match; its compliance rate is reported.")
    json_schema: dict | None = Field(None, description="JSON schema a compliant answer must satisfy; its compliance rate is reported.")
    max_regression: float | None = Field(
        None, ge=0, description="Fail the job when tuned eval loss exceeds base eval loss by more than this fraction."
    )
