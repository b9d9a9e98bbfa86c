"""train.grpo and its graders validated like the rest of the spec: every problem named with its field and fix."""

from __future__ import annotations

import pytest

from cluster.spec import SpecError, validate_spec
from tests.cluster.test_spec import minimal

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip


def grpo(graders=None, cluster=None, **settings) -> dict:
    train = {"objective": "grpo", "micro_batch_size": 4, "eval_steps": None,
             "grpo": {"num_generations": 4, "graders": [EXACT] if graders is None else graders, **settings}}  # fmt: skip
    return minimal(train=train, **({"cluster": cluster} if cluster else {}))


def problems(spec: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        validate_spec(spec)
    return {p.field: f"{p.problem} Fix: {p.fix}" for p in err.value.problems}


def test_a_grpo_spec_validates_and_round_trips_through_a_plain_dict():
    schema = {"type": "json_schema", "name": "shape", "schema": {"type": "object", "required": ["a"]}}
    spec = validate_spec(grpo(graders=[EXACT, schema], weights=[2, 1]))
    assert spec.train.grpo.graders[1].schema_ == {"type": "object", "required": ["a"]}
    assert validate_spec(spec.model_dump()) == spec  # crosses the Ray boundary as a dict


def test_an_openai_rft_multi_grader_carries_over_unchanged():
    rft = {
        "type": "multi",
        "name": "combined",
        "graders": {
            "exact": EXACT,
            "close": {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                      "reference": "{{item.answer}}", "evaluation_metric": "rouge_l", "pass_threshold": 0.8},
            "judge": {"type": "python", "name": "judge", "source": "def grade(sample, item):\n    return 1.0\n",
                      "image_tag": "2025-05-08"},
        },
        "calculate_output": "0.5 * exact + 0.3 * close + 0.2 * judge",
    }  # fmt: skip
    assert validate_spec(grpo(graders=[rft])).train.grpo.graders[0].graders["close"].threshold() == 0.8


def test_template_regex_schema_formula_and_operation_errors_are_named_at_validation():
    found = problems(
        grpo(
            graders=[
                {**EXACT, "reference": "{{item.answer"},
                {**EXACT, "name": "b", "input": "{{sample.text}}"},
                {"type": "regex", "name": "r", "pattern": "(unclosed"},
                {"type": "json_schema", "name": "j", "schema": {"type": "objekt"}},
                {"type": "multi", "name": "m", "graders": {"a": EXACT}, "calculate_output": "a + b"},
                {"type": "text_similarity", "name": "t", "input": "x", "reference": "y", "evaluation_metric": "cosine"},
            ]
        )
    )
    assert "unclosed '{{'" in found["train.grpo.graders.0.reference"]
    assert "'{{sample.text}}' is not a template" in found["train.grpo.graders.1.input"]
    assert "{{item.FIELD}}" in found["train.grpo.graders.1.input"]
    assert "not a valid regular expression" in found["train.grpo.graders.2.pattern"]
    assert "not a valid JSON schema" in found["train.grpo.graders.3.schema"]
    assert "'b' is not one of the graders (a)" in found["train.grpo.graders.4.calculate_output"]
    assert "cosine is not available" in found["train.grpo.graders.5.evaluation_metric"]


def test_an_unknown_operation_is_named_with_the_known_ones():
    found = problems(grpo(graders=[{**EXACT, "operation": "startswith"}]))
    assert "'eq', 'ne', 'like' or 'ilike'" in found["train.grpo.graders.0.string_check.operation"]


def test_an_unknown_grader_type_names_the_known_ones():
    found = problems(grpo(graders=[{"type": "label_model", "name": "l"}]))
    assert "string_check" in found["train.grpo.graders.0"] and "multi" in found["train.grpo.graders.0"]


def test_num_generations_one_is_named():
    found = problems(grpo(num_generations=1))
    assert "always 0 for a group of one" in found["train.grpo.num_generations"]


def test_a_batch_that_num_generations_does_not_divide_is_named():
    found = problems(grpo(num_generations=3, cluster={"num_workers": 2}))
    assert "4 x gradient_accumulation_steps 1 x 2 workers = 8 answers" in found["train.grpo.num_generations"]
    assert "multiple of 3" in found["train.grpo.num_generations"]


def test_grpo_needs_graders_weights_match_and_names_are_unique():
    assert "at least one grader" in problems(grpo(graders=[]))["train.grpo.graders"]
    found = problems(grpo(graders=[EXACT, EXACT], weights=[1]))
    assert "1 weights for 2 graders" in found["train.grpo.weights"]
    assert "two graders are named 'exact'" in found["train.grpo.graders"]


def test_grpo_settings_need_objective_grpo_and_luspo_is_named():
    spec = grpo()
    spec["train"]["objective"] = "sft"
    assert "objective is 'sft'" in problems(spec)["train.grpo"]
    assert "sequence-level importance sampling" in problems(grpo(loss_type="luspo"))["train.grpo.loss_type"]


def test_a_grader_problem_in_a_yaml_spec_names_its_line(tmp_path):
    import yaml

    from cluster.spec import load_spec

    spec = grpo(graders=[EXACT, {"type": "regex", "name": "r", "pattern": "(unclosed"}])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    (problem,) = err.value.problems
    pattern_line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "(unclosed" in text)
    assert problem.field == "train.grpo.graders.1.pattern" and problem.line == pattern_line
    assert f"train.grpo.graders.1.pattern (line {pattern_line}): not a valid regular expression" in str(err.value)
