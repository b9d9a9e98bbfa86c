"""`score_model`: an LLM judge through any OpenAI-compatible endpoint (the `openai` client), scoring within a range."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field

from cluster.graders.base import GraderBase, GraderError
from cluster.graders.template import render
from cluster.spec.base import Problem, Section

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Message(Section):
    """One judge message (OpenAI's EasyInputMessage with text content)."""

    role: Literal["user", "assistant", "system", "developer"] = Field(description="Who speaks.")
    content: str = Field(description="The text; may hold templates such as {{sample.output_text}}.")
    type: Literal["message"] | None = Field(None, description="Always message, when given.")


class SamplingParams(Section):
    """OpenAI's sampling_params of a score_model grader."""

    max_completions_tokens: int | None = Field(None, ge=1, description="Longest judge reply.")
    reasoning_effort: str | None = Field(None, description="Passed through to reasoning models.")
    seed: int | None = Field(None, description="Sampling seed.")
    temperature: float | None = Field(None, ge=0, description="Judge sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling.")


class Grader(GraderBase):
    """OpenAI's ScoreModelGrader: the judge's number, clamped to `range`."""

    type: Literal["score_model"] = Field(description="Always score_model.")
    model: str = Field(description="The judge model's name at the endpoint.")
    input: list[Message] = Field(min_length=1, description="The judge's messages, with templates.")
    range: list[float] = Field(default_factory=lambda: [0.0, 1.0], description="Lowest and highest score [lo, hi].")
    sampling_params: SamplingParams | None = Field(None, description="Judge sampling settings.")
    base_url: str | None = Field(
        None, description="rayfit's: the OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI's)."
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="rayfit's: the environment variable holding the API key.")
    timeout_s: float = Field(60.0, gt=0, description="rayfit's: longest one judge call may take.")

    def templates(self) -> dict[str, str]:
        return {f"input.{i}.content": m.content for i, m in enumerate(self.input)}

    def threshold(self) -> float:
        return self.range[1] if self.pass_threshold is None else self.pass_threshold

    def problems(self) -> list[Problem]:
        out = super().problems()
        if len(self.range) != 2 or self.range[0] >= self.range[1]:
            out.append(Problem("range", f"{self.range} is not [lowest, highest].", "write e.g. range: [0, 10]."))
        return out


def scorer(grader: Grader):
    """The grader as a function of (sample, item): one chat completion per sample."""
    from openai import OpenAI

    lo, hi = grader.range
    client = OpenAI(
        base_url=grader.base_url or os.environ.get("OPENAI_BASE_URL"),
        api_key=os.environ.get(grader.api_key_env) or "EMPTY",  # rayfit's own endpoint takes any key
        timeout=grader.timeout_s,
        max_retries=1,
    )
    params = grader.sampling_params.model_dump(exclude_none=True) if grader.sampling_params else {}
    if "max_completions_tokens" in params:
        params["max_completion_tokens"] = params.pop("max_completions_tokens")
    ask = {"role": "system", "content": f"Reply with one number from {lo:g} to {hi:g}: the score, and nothing else."}

    def score(sample: dict, item: dict) -> float:
        messages = [{"role": m.role, "content": render(m.content, sample, item)} for m in grader.input] + [ask]
        try:
            reply = client.chat.completions.create(model=grader.model, messages=messages, **params)
        except Exception as e:  # the endpoint's own error types vary; the message names it
            raise GraderError(f"the judge endpoint failed ({type(e).__name__}: {e})") from None
        text = reply.choices[0].message.content or ""
        found = NUMBER.search(text)
        if found is None:
            raise GraderError(f"the judge replied {text[:80]!r}, with no number in it")
        return min(max(float(found.group()), lo), hi)

    return score
