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
