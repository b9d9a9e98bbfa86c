"""Bin packing of sample lengths: best-fit decreasing, and minimum-slack filling for corpora where BFD wastes rows.

TRL's `pack_dataset(strategy="bfd")` is correct but stops at best-fit decreasing, which on the embedded FAQ at
max_seq_len 1024 needs 51 rows for 51,037 tokens (97.7% full) where 50 rows suffice (99.7%). With few samples per
row, BFD leaves a small gap in every row that no remaining sample fits. Minimum-slack filling instead builds each
row around the longest remaining sample and completes it with the subset of the others that fills it most exactly
(a subset-sum over Python big-int bitsets). On 9,500 FAQ samples BFD still wastes 1.7% of rows, so the filling runs
on groups of about CHUNK_BINS rows' worth of samples (linear time), for up to EXACT_MAX_SAMPLES samples, and the
result with fewer rows wins.
"""

from __future__ import annotations

import bisect

EXACT_MAX_SAMPLES = 500_000  # above this, best-fit decreasing alone (minutes of filling saved)
CHUNK_BINS = 200


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of indices into `lengths`) filled longest first, each into the fullest bin it fits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    gaps: list[tuple[int, int]] = []  # sorted (gap, bin) pairs
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(gaps, (n, -1))
        if at < len(gaps):
            gap, b = gaps.pop(at)
        else:
            gap, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if gap - n > 0:
            bisect.insort(gaps, (gap - n, b))
    return bins


def pack_lengths(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of sample indices whose lengths sum to at most `capacity`, as few as the two heuristics find."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sample is longer than the bin capacity {capacity}")
    bins = best_fit_decreasing(lengths, capacity)
    excess = len(bins) - -(-sum(lengths) // capacity)  # rows over the lower bound ceil(tokens / capacity)
    chunks = _chunks(lengths, capacity)
    # Filling group by group can waste a row per group, so it cannot win when BFD is within that of the bound.
    if excess >= len(chunks) and len(lengths) <= EXACT_MAX_SAMPLES:
        exact = []
        for chunk in chunks:
            exact += [[chunk[j] for j in b] for b in minimum_slack([lengths[i] for i in chunk], capacity)]
        if len(exact) < len(bins):
            bins = exact
    return bins


def _chunks(lengths: list[int], capacity: int) -> list[list[int]]:
    """Index groups of about CHUNK_BINS bins' worth of samples, each with the whole length distribution.

    Minimum-slack filling costs (bins x samples) per group, so large corpora are filled group by group; each
    group can waste at most its last row, about 1/CHUNK_BINS.
    """
    per_chunk = max(1, CHUNK_BINS * capacity * len(lengths) // max(1, sum(lengths)))
    count = -(-len(lengths) // per_chunk)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k::count] for k in range(count)]


def minimum_slack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Each bin: the longest remaining sample plus the subset of the rest that leaves the least room."""
    left = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins = []
    mask = (1 << (capacity + 1)) - 1
    while left:
        first, rest = left[0], left[1:]
        room = capacity - lengths[first]
        # reach[k] has bit t set when some subset of rest[:k] sums to t; kept per step to recover the subset.
        reach = [1]
        for i in rest:
            reach.append((reach[-1] | (reach[-1] << lengths[i])) & mask)
        target = (reach[-1] & ((1 << (room + 1)) - 1)).bit_length() - 1
        chosen = []
        for k in range(len(rest), 0, -1):
            if target and not (reach[k - 1] >> target) & 1:
                chosen.append(rest[k - 1])
                target -= lengths[rest[k - 1]]
        taken = set(chosen)
        bins.append([first, *chosen])
        left = [i for i in rest if i not in taken]
    return bins
