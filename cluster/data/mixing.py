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


def split_rows(rows: list[dict], data, report, what: str) -> tuple[list[dict], list[dict]]:
    """(train, held-out) of rows that carry `src` (their source's index in data.train + data.eval).

    Held out: the rows of eval sources, else a seeded data.eval_split of the train rows. Train: each source's rows
    mixed by weight (mix_counts), then shuffled with data.seed, because KTO reads its data in order (its KL term
    pairs neighbours), so the file order must not be the training order. The report's per-source counts are filled
    in; UserError naming the drop reasons when no train row is left (`what` names the rows: "preference rows").
    """
    from cluster.errors import UserError

    rng = random.Random(data.seed)
    n_train = len(data.train)
    groups = [[i for i, r in enumerate(rows) if r["src"] == k] for k in range(n_train)]
    held = [i for i, r in enumerate(rows) if r["src"] >= n_train]
    report.eval_from = "sources" if data.eval else ("split" if data.eval_split > 0 else "none")
    if not data.eval:
        held = split_eval([i for g in groups for i in g], data.eval_split, rng)[1]
        held_set = set(held)
        groups = [[i for i in g if i not in held_set] for g in groups]
    counts = mix_counts([len(g) for g in groups], [s.weight for s in data.train])
    train = []
    for k, (group, count) in enumerate(zip(groups, counts, strict=True)):
        report.sources[k].rows_kept = len(group)
        report.sources[k].rows_used = count
        train += choose(group, count, rng)
    for k, s in enumerate(report.eval_sources):
        s.rows_kept = s.rows_used = sum(1 for i in held if rows[i]["src"] == n_train + k)
    if not train:
        why = ", ".join(f"{r}: {e.count} (e.g. {e.examples[0]})" for r, e in report.dropped.items())
        raise UserError(
            f"no {what} left for training ({report.rows_read} read; dropped {why or 'none'}). "
            "Fix: run `rayfit data check SPEC` and repair the data."
        )
    rng.shuffle(train)
    return [rows[i] for i in train], [rows[i] for i in held]
