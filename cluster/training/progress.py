"""One line a person reads per logging step; the numbers themselves go to log_history.json and the trackers."""

from __future__ import annotations

import sys
import time

from transformers import TrainerCallback

# (log key, label): the numbers of a line, when the trainer logs them. GRPO (TRL's GRPOTrainer) logs the reward's
# mean and std, the KL to the reference (beta > 0), the mean answer length and the share of clipped token ratios.
SHOWN = (
    ("loss", "loss"),
    ("eval_loss", "eval_loss"),
    ("rewards/accuracies", "reward_acc"),
    ("reward", "reward"),
    ("reward_std", "reward_std"),
    ("eval_reward", "eval_reward"),
    ("kl", "kl"),
    ("completions/mean_length", "answer_len"),
    ("clip_ratio/region_mean", "clipped"),
)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(step: int, total: int, logs: dict, tokens_per_s: float | None, elapsed: float, eta: float | None) -> str:
    """`step 30/60 (50%) | loss 2.914 | eval_loss 3.015 | lr 1.0e-03 | 1,234 tok/s | 1:05 elapsed | ETA 1:05`."""
    parts = [f"step {step}/{total}" + (f" ({100 * step // total}%)" if total else "")]
    for key, label in SHOWN:
        if key in logs:
            parts.append(f"{label} {logs[key]:.4f}")
    graders = [k.split("/")[1] for k in logs if k.startswith("rewards/") and k.endswith("/mean")]  # GRPO's graders
    if len(graders) > 1:
        parts.append(" ".join(f"{g} {logs[f'rewards/{g}/mean']:.3f}" for g in graders))
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.1e}")
    if tokens_per_s:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    parts.append(f"{_duration(elapsed)} elapsed")
    if eta is not None:
        parts.append(f"ETA {_duration(eta)}")
    return "rayfit: " + " | ".join(parts)


class ProgressLog(TrainerCallback):
    """Rank 0 prints one progress line per log event: losses, learning rate, tokens/s of the whole group, elapsed, ETA."""

    def __init__(self, rank: int, sink=None):
        self.rank = rank
        self.sink = sink  # also given each step's numbers (a service job's metrics events, cluster/service)
        self.start: tuple[float, int] | None = None  # (time, step) when this process began training
        self.last: tuple[float, int] | None = None  # (time, tokens seen) at the last train log

    def on_train_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.start, self.last = (now, state.global_step), (now, state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.rank != 0 or not logs or self.start is None:
            return
        now, seen, step = time.perf_counter(), state.num_input_tokens_seen, state.global_step
        t0, s0 = self.last or (now, seen)
        rate = (seen - s0) / (now - t0) if now > t0 and seen > s0 else None
        if "loss" in logs:  # train logs carry the token count; eval logs do not advance it
            self.last = (now, seen)
        elapsed = now - self.start[0]
        done = step - self.start[1]  # steps this process ran (a resumed run starts mid-way)
        eta = elapsed / done * (state.max_steps - step) if done > 0 and state.max_steps else None
        print(progress_line(step, state.max_steps, logs, rate, elapsed, eta), file=sys.stdout, flush=True)
        if self.sink is not None:
            self.sink(step, state.max_steps, logs, rate, seen, eta)
