"""OpenAI's hyperparameters as the job-create body gives them: "auto" or a number in range, else a 400 naming it."""

from __future__ import annotations

import pytest

from cluster.service.job_request import BadRequest, parse_request

BODY = {"model": "tiny", "training_file": "file-abc"}


def _with(method: str, **hyper) -> dict:
    return {**BODY, "method": {"type": method, method: {"hyperparameters": hyper}}}


def test_auto_is_accepted_for_every_hyperparameter():
    request = parse_request(_with("dpo", n_epochs="auto", batch_size="auto", learning_rate_multiplier="auto", beta="auto"))
    hyper = request.hyper()
    assert (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier, hyper.beta) == ("auto",) * 4
    assert parse_request(_with("supervised", n_epochs=3, batch_size=8)).hyper().n_epochs == 3


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("n_epochs", 0, "greater than or equal to 1"),
        ("n_epochs", -1, "greater than or equal to 1"),
        ("n_epochs", "lots", "valid integer"),
        ("learning_rate_multiplier", 1e9, "less than or equal to 10"),
    ],
)
def test_out_of_range_values_name_the_parameter(field, value, says):
    with pytest.raises(BadRequest, match=says) as e:
        parse_request(_with("supervised", **{field: value}))
    assert e.value.param == f"method.supervised.hyperparameters.{field}"


EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip


def _rft(grader=EXACT, rayfit: dict | None = None, **hyper) -> dict:
    body = {**BODY, "method": {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}}}
    return {**body, "rayfit": {"spec": rayfit}} if rayfit else body


def _resolve(body: dict, valid: str | None = None):
    from cluster.service.job_request import resolve_spec
    from tests.service.conftest import TEMPLATE

    return resolve_spec(parse_request(body), TEMPLATE, "/models/tiny", "/data/rft.jsonl", valid, ("/runs", "ftjob-1"))


def test_reinforcement_trains_grpo_with_the_grader_and_counts_prompts_per_step():
    # the template: 1 worker x micro-batch 4 answers per pass; GRPO's default group is 8 answers per prompt
    spec, hyper = _resolve(_rft(n_epochs=1, batch_size=2, learning_rate_multiplier=2, eval_samples=5))
    train = spec["train"]
    assert train["objective"] == "grpo" and train["grpo"]["graders"] == [EXACT]
    assert train["gradient_accumulation_steps"] == 4  # 2 prompts x 8 answers = 16 = 4 passes of 4
    assert train["epochs"] == 1 and train["learning_rate"] == pytest.approx(6e-3)
    assert spec["evaluate"]["gate_metric"] == "reward" and spec["evaluate"]["max_samples"] == 5
    assert train["eval_steps"] is None  # a pass of 4 answers cannot hold a whole group of 8
    assert hyper == {
        "n_epochs": 1,
        "batch_size": 2,
        "learning_rate_multiplier": 2,
        "eval_interval": "auto",
        "eval_samples": 5,
        "compute_multiplier": "auto",
        "reasoning_effort": "default",
        "seed": 42,
        "max_steps": None,
    }


def test_reinforcement_auto_batch_is_the_templates_rounded_up_to_whole_groups():
    assert _resolve(_rft())[1]["batch_size"] == 1  # 4 answers -> one group of 8
    spec, hyper = _resolve(_rft(rayfit={"train": {"grpo": {"num_generations": 2}}}, eval_interval=3), valid="/data/v.jsonl")
    assert spec["train"]["gradient_accumulation_steps"] == 1 and hyper["batch_size"] == 2  # 4 answers = 2 prompts x 2
    assert spec["train"]["eval_steps"] == 3 and hyper["eval_interval"] == 3


def test_an_eval_interval_whose_batches_cannot_hold_whole_groups_is_refused():
    with pytest.raises(BadRequest, match="whole groups of 8 answers .* holds 4") as e:
        _resolve(_rft(eval_interval=10))
    assert e.value.param == "method.reinforcement.hyperparameters.eval_interval"


@pytest.mark.parametrize(("field", "value"), [("compute_multiplier", 2.0), ("reasoning_effort", "high")])
def test_hyperparameters_rayfit_has_no_equivalent_for_are_refused_unless_auto(field, value):
    with pytest.raises(BadRequest, match=f"{field} is not supported") as e:
        _resolve(_rft(**{field: value}))
    assert e.value.param == f"method.reinforcement.hyperparameters.{field}"
    assert _resolve(_rft(compute_multiplier="auto", reasoning_effort="default"))[0]["train"]["objective"] == "grpo"


@pytest.mark.parametrize(
    ("grader", "param", "says"),
    [
        ({k: v for k, v in EXACT.items() if k != "operation"}, "method.reinforcement.grader.operation", "required field"),
        ({**EXACT, "input": "{{sample.text}}"}, "method.reinforcement.grader.input", "not a template this grader knows"),
        ({**EXACT, "type": "label_model"}, "method.reinforcement.grader", "does not match any of the expected tags"),
        (
            {"type": "multi", "name": "m", "graders": {"a": {**EXACT, "operation": "is"}}, "calculate_output": "a"},
            "method.reinforcement.grader.graders.a.operation",
            "'eq', 'ne', 'like' or 'ilike'",
        ),
    ],
)
def test_a_bad_grader_is_named_with_the_spec_validations_message(grader, param, says):
    with pytest.raises(BadRequest, match=says) as e:
        _resolve(_rft(grader))
    assert e.value.param == param and str(e.value).startswith(param)


def test_python_graders_follow_the_services_switch(monkeypatch):
    grader = {"type": "python", "name": "len", "source": "def grade(sample, item):\n    return 1.0\n"}
    assert _resolve(_rft(grader))[0]["train"]["grpo"]["graders"][0]["type"] == "python"
    monkeypatch.setenv("RAYFIT_PYTHON_GRADERS", "off")
    with pytest.raises(BadRequest, match="python graders are switched off on this service") as e:
        _resolve(_rft(grader))
    assert e.value.param == "method.reinforcement.grader.type"


def test_reinforcement_without_a_grader_is_refused_naming_it():
    for method in ({"type": "reinforcement"}, {"type": "reinforcement", "reinforcement": {"hyperparameters": {}}}):
        with pytest.raises(BadRequest, match="grader") as e:
            parse_request({**BODY, "method": method})
        assert e.value.param == "method.reinforcement.grader"
