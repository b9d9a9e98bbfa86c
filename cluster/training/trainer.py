"""Assembling the Ray Train `TorchTrainer` for a spec: workers, storage, best-k checkpoints, restarts."""

from __future__ import annotations

import uuid

from cluster import storage
from cluster.errors import UserError
from cluster.noise import runtime_env
from cluster.objectives import recipe_for
from cluster.run_folder import run_uri
from cluster.spec import JobSpec


def worker_loop(config: dict) -> dict:
    """What each Ray Train worker runs: cluster.training.loop.train_loop, imported on the worker, so that the driver
    building the trainer does not import the training stack (TRL, PEFT, bitsandbytes: seconds of CPU per job)."""
    from cluster.training.loop import train_loop

    return train_loop(config)


def loop_config(spec: JobSpec, train_path: str, eval_path: str | None, actors: dict | None = None) -> dict:
    """The plain dict every worker receives (only plain values cross the Ray boundary); `actors` are the plain values
    the objective's recipe yielded about what runs beside the workers (GRPO's rollout engine)."""
    # A name, not a path: each node puts it under its own temporary folder (nodes share no disk).
    scratch = f"{spec.output.name}-{uuid.uuid4().hex[:8]}"
    return {
        "spec": spec.model_dump(mode="json", exclude_unset=True),
        "run": run_uri(spec),
        "train_path": train_path,
        "eval_path": eval_path,
        "scratch": scratch,
        "actors": actors or {},
    }


def build_trainer(
    spec: JobSpec,
    train_path: str,
    eval_path: str | None,
    extra_env: dict[str, str] | None = None,
    loop=worker_loop,
    actors: dict | None = None,
):
    """A TorchTrainer that runs `loop` (`worker_loop`, or a function that calls train_loop) on `cluster.num_workers` workers
    (from `cluster.min_workers` up, for an elastic run) and keeps checkpoints in storage; `actors` are what the
    objective runs beside the workers (handles passed to every worker).

    Storage is `{output.storage}/{output.name}`: Ray Train V2 restores its checkpoint bookkeeping from there, so
    submitting the same name again resumes. Checkpoints are ranked by the objective's eval metric (eval loss; GRPO's
    eval reward) when there is evaluation.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    c = spec.cluster
    evaluating = eval_path is not None and spec.train.eval_steps is not None
    best, higher = recipe_for(spec).checkpoint_metric
    resources = {"CPU": c.cpus_per_worker, **({"GPU": c.gpus_per_worker} if c.use_gpu else {})}
    return TorchTrainer(
        loop,
        train_loop_config=loop_config(spec, train_path, eval_path, actors),
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=c.num_workers if c.min_workers is None else (c.min_workers, c.num_workers),
            use_gpu=c.use_gpu,
            resources_per_worker=resources,
            accelerator_type=c.accelerator_type,
            placement_strategy=c.placement.upper(),
            elastic_resize_monitor_interval_s=c.resize_check_s,
        ),
        run_config=RunConfig(
            name=spec.output.name,
            storage_path=storage.normalize(spec.output.storage),
            failure_config=FailureConfig(max_failures=c.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # rayfit prints its own progress and checkpoint lines
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.train.keep_checkpoints,
                checkpoint_score_attribute=best if evaluating else None,
                checkpoint_score_order="max" if higher else "min",
            ),
            worker_runtime_env=_worker_runtime_env(c.use_gpu, extra_env),
        ),
    )


def fit(spec: JobSpec, train_path: str, eval_path: str | None, extra_env: dict[str, str] | None = None, loop=worker_loop):
    """Run training to the end (restarting failed workers up to cluster.max_failures) and return Ray's Result.

    What the objective runs beside the workers (GRPO's vLLM rollout engine) lives exactly as long as this call. A
    worker that stopped with a named error (a UserError: too many grader failures, a rollout past its bound) makes
    this raise that error, so the job prints one line instead of Ray's traceback.
    """
    from ray.train import TrainingFailedError

    with recipe_for(spec).actors(spec) as actors:
        try:
            return build_trainer(spec, train_path, eval_path, extra_env, loop, actors).fit()
        except TrainingFailedError as e:
            named = named_error(e)
            if named is None:
                raise
            raise named from None


def named_error(failure: Exception) -> UserError | None:
    """The UserError a worker raised (the lowest rank's), out of Ray Train's failure; None for any other failure."""
    for _, error in sorted(getattr(failure, "worker_failures", {}).items()):
        for candidate in (error, getattr(error, "cause", None)):
            if isinstance(candidate, UserError):
                return UserError(str(candidate.args[0]) if candidate.args else str(candidate))
    return None


def _worker_runtime_env(use_gpu: bool, extra_env: dict[str, str] | None) -> dict:
    env = runtime_env(use_gpu)
    return {**env, "env_vars": {**env["env_vars"], **(extra_env or {})}}
