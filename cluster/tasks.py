"""The steps after training on the cluster: merge and evaluate run on a node that can hold them, with the CPU, GPU
and memory requests the planner worked out (cluster.planner.steps), never in the driver (the job's entrypoint).

Evaluation is two kinds of work: its answers come from vLLM engine replicas that Ray Data places (one bundle each:
a CPU, plus a GPU on GPU clusters; cluster/generation/engine.py), and its losses from a Ray task with the planner's
evaluate request, started after the engines are gone. Only plain values cross the Ray boundary (URIs and
`spec.model_dump()`); the task validates the spec again.
"""

from __future__ import annotations

from typing import Any

from cluster.errors import UserError
from cluster.planner.steps import StepRequest
from cluster.spec import JobSpec

MERGE_TASK, EVALUATE_TASK = "rayfit-merge", "rayfit-evaluate"


def merge_on_cluster(checkpoint_uri: str, into: str, request: StepRequest) -> str:
    """Merge `checkpoint_uri` in a Ray task with `request`'s resources; returns the export URI."""
    return _run(_merge, MERGE_TASK, request, checkpoint_uri, into)


def evaluate_on_cluster(spec: JobSpec, tuned_uri: str, out_uri: str, request: StepRequest) -> dict:
    """Score base and tuned: answers on vLLM engines, losses in a Ray task with `request`'s resources; returns the
    report (UserError if the gate fails)."""
    from cluster.evaluation import evaluate_run

    return evaluate_run(spec, tuned_uri, out_uri, step=lambda fn, *args: _run(fn, EVALUATE_TASK, request, *args))


def _merge(checkpoint_uri: str, into: str) -> str:
    from cluster.merge import merge_checkpoint

    return merge_checkpoint(checkpoint_uri, into=into)


def _plain_errors(fn, *args) -> Any:
    """`fn(*args)`, with a UserError turned into a plain UserError with the same message and exit code: subclasses
    with their own constructor (SpecError takes a list of problems) do not survive Ray's pickling."""
    try:
        return fn(*args)
    except UserError as e:
        plain = UserError(str(e))
        plain.exit_code = e.exit_code
        raise plain from None


def _run(fn, name: str, request: StepRequest, *args) -> Any:
    """Run `fn(*args)` as a named Ray task and wait for it; a UserError inside comes back as itself (one line)."""
    import ray

    task = ray.remote(max_retries=0)(_plain_errors).options(name=name, **request.ray_options())
    try:
        return ray.get(task.remote(fn, *args))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise e.cause from None
        raise
