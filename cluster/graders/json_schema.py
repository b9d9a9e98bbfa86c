"""`json_schema` (rayfit's): the answer parses as JSON and satisfies a schema, with optional credit per required field."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import ConfigDict, Field

from cluster.graders.base import GraderBase
from cluster.graders.template import render
from cluster.spec.base import Problem


def schema_problem(field: str, schema: dict) -> Problem | None:
    """A problem naming `field` when `schema` is not itself a valid JSON schema."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        return Problem(field, f"not a valid JSON schema ({e.message}).", "fix the schema (see json-schema.org).")
    return None


def conforms(text: str, schema: dict) -> bool:
    """Whether the text parses as JSON and validates against the schema."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


class Grader(GraderBase):
    """1.0 for a valid answer; with partial_credit, an invalid object earns the share of required fields that are right."""

    # `schema` is the field's name in the spec; pydantic's BaseModel already has a `schema` method.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True)
    TEMPLATES = ("input",)

    type: Literal["json_schema"] = Field(description="Always json_schema.")
    input: str = Field("{{sample.output_text}}", description="The text parsed as JSON.")
    schema_: dict = Field(alias="schema", description="The JSON schema the answer must satisfy.")
    partial_credit: bool = Field(
        False,
        description="Score an object that fails the schema by the fraction of top-level required fields that are "
        "present and valid against their own property schema.",
    )

    def problems(self):
        out = super().problems()
        bad = schema_problem("schema", self.schema_)
        if bad:
            out.append(bad)
        elif self.partial_credit and not self.schema_.get("required"):
            out.append(
                Problem(
                    "partial_credit",
                    "partial credit is counted per required field, but the schema lists none.",
                    "add 'required': [...] to the schema, or set partial_credit: false.",
                )
            )
        return out


def scorer(grader: Grader):
    """The grader as a function of (sample, item)."""
    import jsonschema

    schema = grader.schema_
    validator = jsonschema.validators.validator_for(schema)(schema)

    def score(sample: dict, item: dict) -> float:
        try:
            value = json.loads(render(grader.input, sample, item))
        except ValueError:
            return 0.0
        if validator.is_valid(value):
            return 1.0
        if not grader.partial_credit or not isinstance(value, dict):
            return 0.0
        required, props = schema["required"], schema.get("properties", {})
        right = [f in value and (f not in props or validator.evolve(schema=props[f]).is_valid(value[f])) for f in required]
        return sum(right) / len(required)

    return score
