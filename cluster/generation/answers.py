"""Answers of several models to the same rendered prompts, with as few vLLM engines as they allow.

Models that share their full weights share one engine: a LoRA adapter's rows go through its base's engine with the
adapter, the base's own rows without it (vLLM serves both in one batch). Models with different weights get one
engine each, one after the other, so only one holds memory at a time. Evaluation calls this for base vs tuned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cluster.generation.pipeline import answer, token_request
from cluster.generation.settings import EngineSettings


@dataclass(frozen=True)
class Answerer:
    """What answers: a folder (or hub id) of full weights vLLM loads, and an optional LoRA adapter folder on it."""

    folder: str
    adapter: Path | None = None
    revision: str | None = None  # of a hub id


@dataclass
class Answers:
    """Each answerer's answer texts in prompt order (stripped; "" where a row failed), and what produced them."""

    texts: list[list[str]]
    errors: list[list[str | None]]  # why a row failed, per answerer and prompt
    engines: list[dict] = field(default_factory=list)  # one per engine started: its weights and adapters
    output_tokens: int = 0
    failures: list[str] = field(default_factory=list)  # "answerer i, prompt j: reason"


def answer_prompts(prompt_ids: list[list[int]], answerers: list[Answerer], settings: EngineSettings) -> Answers:
    """Greedy (or `settings.sampling`) answers of every answerer to every prompt; needs Ray initialised."""
    out = Answers(texts=[[""] * len(prompt_ids) for _ in answerers], errors=[[None] * len(prompt_ids) for _ in answerers])
    if not prompt_ids:
        return out
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, a in enumerate(answerers):
        groups.setdefault((a.folder, a.revision), []).append(i)
    for (folder, revision), members in groups.items():
        adapters = sorted({answerers[i].adapter for i in members if answerers[i].adapter}, key=str)
        engine = settings.model_copy(update={"engine_kwargs": _with_revision(settings.engine_kwargs, revision)})
        requests = [
            token_request(i * len(prompt_ids) + j, ids, engine, answerers[i].adapter)
            for i in members
            for j, ids in enumerate(prompt_ids)
        ]
        out.engines.append({"model": folder, "adapters": [str(a) for a in adapters], "rows": len(requests)})
        for row in answer(engine, folder, adapters, requests):
            i, j = divmod(row["index"], len(prompt_ids))
            out.output_tokens += row["output_tokens"] or 0
            if row["error"]:
                out.errors[i][j] = row["error"]
                out.failures.append(f"answerer {i}, prompt {j}: {row['error']}")
            else:
                out.texts[i][j] = row["output"].strip()
    return out


def _with_revision(kwargs: dict, revision: str | None) -> dict:
    return {**({"revision": revision} if revision else {}), **kwargs}
