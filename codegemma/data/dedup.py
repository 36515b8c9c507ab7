"""Exact and near-duplicate removal across the whole corpus (a global, deterministic step).

Workers compute, per surviving file, a SHA-1 of its text and a MinHash signature (numpy,
codegemma.data.hashing: 24-byte whitespace-normalised shingles, 1 in 8 sampled, 128 functions).
This step then visits files in (repository, path) order and keeps the first of each group:
- exact: a later file with a SHA-1 already seen is dropped;
- near: datasketch MinHashLSH (Jaccard threshold 0.85) proposes candidates among the files kept
  so far; a file whose estimated Jaccard similarity to one of them is >= 0.85 is dropped.
Visiting in a fixed order makes the outcome independent of the executor and of worker count:
the lexicographically first copy survives.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

NEAR_THRESHOLD = 0.85
NUM_PERM = 128


def find_duplicates(items: Iterable[tuple[str, str, str, np.ndarray | None]],
                    threshold: float = NEAR_THRESHOLD, num_perm: int = NUM_PERM,
                    progress=None) -> dict[tuple[str, str], str]:
    """Items (repo, path, sha1, signature | None) in any order -> {(repo, path): "exact" | "near"}."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    seen_sha: set[str] = set()
    signatures: dict[str, np.ndarray] = {}
    dropped: dict[tuple[str, str], str] = {}
    for repo, path, sha, sig in sorted(items, key=lambda x: (x[0], x[1])):
        if progress is not None:
            progress.update(1)
        if sha in seen_sha:
            dropped[(repo, path)] = "exact_duplicate"
            continue
        seen_sha.add(sha)
        if sig is None:
            continue
        key = f"{repo}\0{path}"
        mh = MinHash(num_perm=num_perm, hashvalues=sig, scheme="affine32")
        near = False
        for cand in lsh.query(mh):
            if float(np.mean(signatures[cand] == sig)) >= threshold:
                near = True
                break
        if near:
            dropped[(repo, path)] = "near_duplicate"
            continue
        lsh.insert(key, mh)
        signatures[key] = sig
    return dropped
