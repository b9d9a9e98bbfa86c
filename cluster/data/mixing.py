"""How source weights become row counts, and the eval split.

Weights are shares of the training mix: source i gets share p_i = w_i / sum(w). No row is repeated, so the mix
is as large as it can be without repeating any source: its size is T = min_i(N_i / p_i) over the kept rows N_i,
and source i contributes floor(T * p_i + 0.5) rows (capped at N_i), drawn without replacement with `data.seed`.
The source that is scarcest for its weight is used in full. Example: 503 domain rows at weight 0.85 and 10,000
general rows at 0.15 give T = 591.8, so all 503 domain rows and 89 general rows (15% of the mix). With one source,
or weights proportional to the sources' sizes, every row is used.
"""

from __future__ import annotations

import random


def mix_counts(available: list[int], weights: list[float]) -> list[int]:
    """Rows taken from each source for the given kept-row counts and weights (see the module docstring)."""
    if len(available) != len(weights):
        raise ValueError("one weight per source")
    total_w = sum(weights)
    shares = [w / total_w for w in weights]
    filled = [n / p for n, p in zip(available, shares, strict=True) if n > 0]
    if len(available) == 1 or not filled:
        return list(available)
    size = min(filled)  # an empty source does not shrink the mix to nothing; its share stays unfilled
    return [min(n, int(size * p + 0.5)) for n, p in zip(available, shares, strict=True)]


def choose(indices: list[int], count: int, rng: random.Random) -> list[int]:
    """`count` of `indices` drawn without replacement (all of them, in order, when count covers them)."""
    return list(indices) if count >= len(indices) else sorted(rng.sample(indices, count))


def split_eval(indices: list[int], fraction: float, rng: random.Random) -> tuple[list[int], list[int]]:
    """(train, eval): a seeded `fraction` of `indices` held out; at least one row when fraction > 0 and rows >= 2."""
    if fraction <= 0 or len(indices) < 2:
        return list(indices), []
    n_eval = max(1, round(fraction * len(indices)))
    held = set(rng.sample(indices, n_eval))
    return [i for i in indices if i not in held], [i for i in indices if i in held]
