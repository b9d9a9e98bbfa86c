"""Near-duplicate samples with datasketch's MinHash LSH: pairs of samples whose normalised texts share most of their
character shingles (case, punctuation and spacing changes, a few words swapped or replaced)."""

from __future__ import annotations

import re
import zlib

NUM_PERM = 128
SHINGLE = 5
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
    return {norm[i:i + SHINGLE].encode() for i in range(len(norm) - SHINGLE + 1)}


def _crc(data: bytes) -> int:
    return zlib.crc32(data)  # a fast stable 32-bit hash; datasketch's default (sha1) is ~5x slower here


def near_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(earlier, later, estimated Jaccard similarity) for every pair of texts at or above `threshold`."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes, pairs = [], []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, hashfunc=_crc)
        m.update_batch(list(shingles(text)))
        for j in lsh.query(m):
            similarity = m.jaccard(hashes[j])
            if similarity >= threshold:  # LSH returns candidates; keep only pairs whose estimate passes
                pairs.append((j, i, similarity))
        lsh.insert(i, m)
        hashes.append(m)
    return sorted(pairs)
