"""On the training workers of a service job: every logged step becomes a `metrics` event, and a pause request makes
the run checkpoint and stop. Both are off unless RAYFIT_SERVICE_JOB is set (the driver sets it for service jobs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from cluster.service import jobs
from cluster.service.driver import SERVICE_JOB_ENV
from cluster.service.store import Store

# (TRL GRPOTrainer log key, metrics event field); each grader's mean is added as reward_<name>
GRPO_METRICS = (
    ("reward", "reward"),
    ("reward_std", "reward_std"),
    ("eval_reward", "valid_reward"),
    ("kl", "kl"),
    ("completions/mean_length", "completion_length"),
    ("clip_ratio/region_mean", "clip_fraction"),
)
PAUSE_POLL_S = 2.0  # rank 0 looks for the pause flag at most this often (one HEAD request on object storage)


def _job() -> tuple[Store, str] | None:
    uri = os.environ.get(SERVICE_JOB_ENV)
    if not uri:
        return None
    root, job_id = uri.rstrip("/").rsplit("/jobs/", 1)
    return Store(root), job_id


def metrics_sink(rank: int) -> Callable | None:
    """A ProgressLog sink writing one `metrics` event per logged step (rank 0 only); None outside service jobs."""
    job = _job()
    if job is None or rank != 0:
        return None
    store, job_id = job

    def sink(step: int, total: int, logs: dict, tokens_per_s: float | None, tokens_seen: int, eta_s: float | None) -> None:
        if "loss" not in logs and "eval_loss" not in logs:  # the Trainer's summary when a run (or an attempt) ends
            return
        data = {"step": step, "total_steps": total, "tokens_seen": tokens_seen, "tokens_per_s": tokens_per_s, "eta_s": eta_s}
        for key, name in (("loss", "train_loss"), ("eval_loss", "valid_loss"), ("learning_rate", "learning_rate")):
            if key in logs:
                data[name] = float(logs[key])
        for key, name in GRPO_METRICS:  # reinforcement runs: the reward and what moves with it
            if key in logs:
                data[name] = float(logs[key])
        data.update(
            {f"reward_{k.split('/')[1]}": float(v) for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean")}
        )
        shown = ", ".join(f"{k} {v:.4g}" for k, v in data.items() if k in ("train_loss", "valid_loss") and v is not None)
        jobs.add_event(store, job_id, f"Step {step}/{total}: {shown or 'logged'}", type="metrics", data=data)

    return sink


class PauseWhenAsked(TrainerCallback):
    """Checkpoint and stop when the job's pause flag appears; every rank stops at the same step (one all-reduce)."""

    def __init__(self, store: Store, job_id: str, rank: int):
        self.store, self.flag, self.rank, self.checked = store, f"jobs/{job_id}/pause", rank, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        asked = 0
        if self.rank == 0 and time.monotonic() - self.checked >= PAUSE_POLL_S:
            self.checked = time.monotonic()
            asked = int(self.store.exists(self.flag))
        if dist.is_available() and dist.is_initialized():
            box = torch.tensor([asked], dtype=torch.int32)
            dist.all_reduce(box, op=dist.ReduceOp.MAX)
            asked = int(box.item())
        if asked:
            control.should_save = True
            control.should_training_stop = True
            if self.rank == 0:
                print(f"rayfit: pause requested: checkpointing at step {state.global_step} and stopping", flush=True)
        return control


def service_callbacks(rank: int) -> list:
    """The callbacks a service job's workers add; none otherwise."""
    job = _job()
    return [] if job is None else [PauseWhenAsked(job[0], job[1], rank)]
