"""A reinforcement fine-tuning job as OpenAI's client sends it: an RFT file (prompts with an `answer` field) and
`method: {type: reinforcement}` with a string_check grader become a GRPO run whose reward reaches the job's events,
and the `ft:` model it publishes answers through chat.completions. Files of the wrong shape for a method are refused.

Slow (55 s measured on a shared 2-core machine, after the session's service fixture): a Ray job on the session's head
prepares the prompts and runs 4 GRPO steps on a Ray Train worker, sampling 4 answers per prompt with the tiny model,
then the service publishes the adapter and vLLM loads it.
The tiny random model does not learn addition: the test asserts the reward is measured, not that it rises
(tests/cluster/objectives/test_grpo_runs.py does).
"""

from __future__ import annotations

import io
import json
import math

import openai
import pytest

from tests.service.conftest import ask, client, training_rows, wait_for

pytestmark = pytest.mark.slow
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip
QUESTION = "What is {a} + {b}? Reply with the number only."
# 4 steps of one prompt x 4 answers; the checkpoint at the last step is what is published
SHORT = {
    "train": {"max_steps": 4, "logging_steps": 1, "save_steps": 4, "grpo": {"num_generations": 4, "max_completion_length": 8}}
}


def addition_rows(n: int = 8) -> str:
    """JSONL in OpenAI's RFT format: a user turn asking for a sum, and its `answer` for the grader."""
    rows = [
        {"messages": [{"role": "user", "content": QUESTION.format(a=a, b=a + 3)}], "answer": str(2 * a + 3)} for a in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_reinforcement_job_trains_grpo_reports_its_reward_and_publishes(service):
    api = client(service["url"], "tenant_b")
    prompts = api.files.create(file=("addition.jsonl", io.BytesIO(addition_rows().encode())), purpose="fine-tune")
    examples = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune")
    assert prompts.status == "processed"
    method = {"type": "reinforcement", "reinforcement": {"grader": EXACT, "hyperparameters": {"batch_size": 1}}}
    for file, kind, says in ((prompts, None, "method {type: reinforcement}"), (examples, method, "method {type: supervised}")):
        with pytest.raises(openai.BadRequestError) as e:  # prompts train reinforcement only, and only prompts do
            api.fine_tuning.jobs.create(model="tiny", training_file=file.id, **({"method": kind} if kind else {}))
        assert e.value.body["param"] == "training_file" and e.value.body["code"] == "invalid_file_for_method"
        assert says in e.value.body["message"]
    bad = {"type": "reinforcement", "reinforcement": {"grader": {**EXACT, "operation": "equals"}}}
    with pytest.raises(openai.BadRequestError) as e:
        api.fine_tuning.jobs.create(model="tiny", training_file=prompts.id, method=bad)
    assert e.value.body["param"] == "method.reinforcement.grader.operation"

    job = api.fine_tuning.jobs.create(
        model="tiny", training_file=prompts.id, method=method, suffix="rft", extra_body={"rayfit": {"spec": SHORT}}
    )
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.name == "exact"
    assert job.method.reinforcement.hyperparameters.batch_size == 1  # 1 prompt x 4 answers = the template's 4 per step
    done = wait_for(job.id, api, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:rft:{job.id}" and done.method.type == "reinforcement"

    metrics = [e.data for e in reversed(api.fine_tuning.jobs.list_events(job.id, limit=100).data) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4], metrics
    for m in metrics:  # the graders' mean and the one grader's own, each in [0, 1]
        assert 0.0 <= m["reward"] <= 1.0 and 0.0 <= m["reward_exact"] <= 1.0 and math.isfinite(m["train_loss"]), m
    assert isinstance(ask(api, done.fine_tuned_model, QUESTION.format(a=2, b=5)), str)
    assert done.fine_tuned_model in [m.id for m in api.models.list().data]
