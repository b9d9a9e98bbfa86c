"""Near-duplicate samples with datasketch's MinHash LSH: pairs of samples whose normalised texts share most of their
character shingles (case, punctuation and spacing changes, a few words swapped or replaced)."""

from __future__ import annotations

import re
import zlib

NUM_PERM = 128
SHINGLE = 5
PAIRS_PER_SAMPLE = 3  # a sample with many near copies (templated data) reports a few, not thousands of pairs
_NOT_WORD = re.compile(r"[\W_]+")


def sample_text(sample: dict) -> str:
    """The text a sample is compared by: its non-system messages, or its text, or prompt and completion."""
    if sample["messages"] is not None:
        return "\n".join(m["content"] for m in sample["messages"] if m["role"] != "system")
    if sample.get("prompt") is not None:
        return sample["prompt"] + "\n" + sample["completion"]
    return sample["text"]


def shingles(text: str) -> set[bytes]:
    """Character SHINGLE-grams of the text lowercased with punctuation and runs of spaces made single spaces."""
    norm = _NOT_WORD.sub(" ", text.lower()).strip()
    if len(norm) <= SHINGLE:
        return {norm.encode()}
    return {norm[i : i + SHINGLE].encode() for i in range(len(norm) - SHINGLE + 1)}


def _crc(data: bytes) -> int:
    return zlib.crc32(data)  # a fast stable 32-bit hash; datasketch's default (sha1) is ~5x slower here


def near_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(earlier, later, estimated Jaccard similarity) for pairs of texts at or above `threshold`: for each text, up to
    PAIRS_PER_SAMPLE earlier ones (lowest index first), so the cost stays linear on heavily templated data."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes, pairs = [], []
    template = MinHash(num_perm=NUM_PERM)  # seeded (seed 1): the same permutations for every run and sample
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, hashfunc=_crc, permutations=template.permutations, scheme=template.scheme)
        m.update_batch(list(shingles(text)))
        found = 0
        for j in sorted(lsh.query(m)):
            similarity = m.jaccard(hashes[j])
            if similarity >= threshold:  # LSH returns candidates; keep only pairs whose estimate passes
                pairs.append((j, i, similarity))
                found += 1
                if found == PAIRS_PER_SAMPLE:
                    break
        lsh.insert(i, m)
        hashes.append(m)
    return sorted(pairs)
