"""The loss curve of a run as a PNG, from the Trainer's log history; GRPO runs get a reward panel below it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(log_history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Draw train and eval loss (and GRPO's rewards) against optimizer step and save the figure to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    rewards = _reward_curves(log_history)
    fig, axes = plt.subplots(1 + bool(rewards), 1, figsize=(7, 4 + 3 * bool(rewards)), dpi=100, squeeze=False)
    ax = axes[0][0]
    for points, label, style in ((train, "train loss", "-"), (evals, "eval loss", "o-")):
        if points:
            ax.plot(*zip(*points, strict=False), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if rewards:  # GRPO: the reward a run raises, with each grader's mean
        panel = axes[1][0]
        for label, points in rewards.items():
            panel.plot(*zip(*points, strict=False), "-" if label in ("reward", "eval reward") else ":", label=label)
        panel.set_xlabel("optimizer step")
        panel.set_ylabel("reward")
        panel.grid(alpha=0.3)
        panel.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _reward_curves(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """GRPO's logged rewards by step: the mean reward, each grader's mean (when there are several), eval reward."""
    keys = {"reward": "reward", "eval_reward": "eval reward"}
    graders = sorted({k for e in log_history for k in e if k.startswith("rewards/") and k.endswith("/mean")})
    if len(graders) > 1:
        keys |= {k: k.split("/")[1] for k in graders}
    curves = {label: [(e["step"], e[k]) for e in log_history if k in e and "step" in e] for k, label in keys.items()}
    return {label: points for label, points in curves.items() if points}
