"""The grader types: one line each, `type` -> the module that owns its spec (`Grader`) and its `scorer`."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from cluster.graders import json_schema, python, regex, score_model, string_check, text_similarity

LEAVES = {
    "string_check": string_check,
    "text_similarity": text_similarity,
    "regex": regex,
    "json_schema": json_schema,
    "python": python,
    "score_model": score_model,
}

# A grader other than multi, chosen by its `type` key (an unknown type is named with the known ones).
LeafGrader = Annotated[Union[tuple(m.Grader for m in LEAVES.values())], Field(discriminator="type")]  # noqa: UP007
