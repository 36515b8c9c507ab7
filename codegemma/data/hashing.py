"""Vectorised text fingerprints shared by near-dedup and decontamination (numpy, no Python loops).

Text is first normalised (whitespace runs -> one space, so re-indented copies still match), then
every window of `k` bytes gets a 64-bit polynomial hash computed with prefix sums:
    window(i) = sum_j b[i+j] * P^j  (mod 2^64) = (H[i+k] - H[i]) * P^-i
which is independent of the position, so equal windows hash equally in any document. Hashes are
then mixed (splitmix64 finaliser) and a fixed fraction is kept by value ("h mod m == 0"): the same
windows are sampled in every document, so exact overlaps are still seen and Jaccard estimates
stay unbiased, at 1/m of the cost.
"""

from __future__ import annotations

import numpy as np

_P = np.uint64(0x100000001B3)                     # odd, so invertible mod 2^64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_MASK64 = (1 << 64) - 1


def normalise(text: str) -> bytes:
    # str.split() with no argument splits on whitespace runs, in C (faster than a regex)
    return " ".join(text.split()).encode("utf-8", "surrogatepass")


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def window_hashes(data: bytes, k: int, sample_mod: int = 1, return_positions: bool = False):
    """Mixed hashes (uint64) of every k-byte window of `data`, keeping those with h % sample_mod == 0.

    With return_positions, also the start offset (int64) of each kept window.
    """
    n = len(data)
    if n < k:
        empty = np.empty(0, dtype=np.uint64)
        return (empty, np.empty(0, dtype=np.int64)) if return_positions else empty
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    with np.errstate(over="ignore"):
        pw = np.empty(n, dtype=np.uint64)
        pw[0] = 1
        pw[1:] = _P
        np.cumprod(pw, out=pw)                        # P^i (wrapping)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(b * pw, out=prefix[1:])
        m = n - k + 1
        inv = np.empty(m, dtype=np.uint64)
        inv[0] = 1
        inv[1:] = _P_INV
        np.cumprod(inv, out=inv)                      # P^-i (wrapping)
        h = _mix((prefix[k:] - prefix[:m]) * inv)
    if sample_mod > 1:
        keep = h % np.uint64(sample_mod) == 0
        if return_positions:
            return h[keep], np.flatnonzero(keep)
        return h[keep]
    return (h, np.arange(h.size, dtype=np.int64)) if return_positions else h


class MinHasher:
    """MinHash signatures of sampled shingle sets, with `num_perm` (a*x + b) hash functions."""

    def __init__(self, num_perm: int = 128, shingle_bytes: int = 24, sample_mod: int = 8, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle_bytes = shingle_bytes
        self.sample_mod = sample_mod
        self.a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)

    def signature(self, text: str | bytes) -> np.ndarray | None:
        """uint32 [num_perm] signature (datasketch's "affine32" layout), or None if too short.

        `text` may be given already normalised (bytes from `normalise`).
        """
        norm = text if isinstance(text, bytes) else normalise(text)
        # duplicates do not change a minimum, so no np.unique
        shingles = window_hashes(norm, self.shingle_bytes, self.sample_mod)
        if shingles.size == 0:
            return None
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for lo in range(0, shingles.size, 8192):      # bound the [num_perm, chunk] temporary
                chunk = shingles[lo:lo + 8192]
                # multiply-shift hashing: the high 32 bits of a*x + b (x already well mixed)
                hv = (self.a[:, None] * chunk[None, :] + self.b[:, None]) >> np.uint64(32)
                np.minimum(sig, hv.min(axis=1), out=sig)
        return sig.astype(np.uint32)
