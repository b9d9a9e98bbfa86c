"""Preference files and prepared datasets from the embedded FAQ, for DPO/KTO tests on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.embedded import embedded_data_path


def faq_records(n: int) -> list[dict]:
    """The first `n` FAQ rows (instruction, output)."""
    return [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")][:n]


def write_pairs(path: Path, n: int, rejected: str | None = None) -> Path:
    """A DPO file: the FAQ answer is chosen, the next question's answer (or the fixed `rejected`) rejected."""
    recs = faq_records(n)
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            f.write(
                json.dumps(
                    {
                        "prompt": r["instruction"],
                        "chosen": r["output"],
                        "rejected": rejected or recs[(i + 1) % len(recs)]["output"],
                    }
                )
                + "\n"
            )
    return path


def write_feedback(path: Path, n: int) -> Path:
    """A KTO file: alternately the right answer (thumbs up) and the next row's answer (thumbs down)."""
    recs = faq_records(n)
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            good = i % 2 == 0
            answer = r["output"] if good else recs[(i + 1) % len(recs)]["output"]
            f.write(json.dumps({"prompt": r["instruction"], "completion": answer, "label": good}) + "\n")
    return path


def prepared(spec_dict: dict, cache: Path) -> tuple[str, str | None]:
    """Train/eval paths of the spec's preference data, prepared as the finetune job does."""
    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec

    spec = validate_spec(spec_dict)
    data = prepare_datasets(spec, load_tokenizer(spec), str(cache))
    return data.train_path, data.eval_path
