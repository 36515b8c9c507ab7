"""Decontamination: drop training files that contain benchmark prompts or solutions.

Targets: every problem record of every benchmark file under the data directory (HumanEval,
HumanEval infilling, MBPP + sanitized, HumanEval-X, MxEval multilingual HumanEval and MBXP: all
`.jsonl`, `.jsonl.gz` and `.json` files there, except sample completions). From each record: its
prompt (`prompt` or `text`), its solution (`canonical_solution` or `code`), and the whole
problem (prompt + solution [+ suffix for infilling]) are separate targets; identical targets are
kept once (the infilling sets repeat HumanEval's functions).

Measure: texts are whitespace-normalised and cut into 48-byte windows (about 10 code tokens),
hashed and sampled 1 in 4 by value (codegemma.data.hashing). A file is contaminated when, for any
target with at least 6 sampled windows (about 70 characters), at least half of that target's
windows occur in the file. Infilling records contribute only their whole function (their
"solution" is a removed span, often a few generic lines).
A shared import header or a common idiom is a small fraction of a target, so it does not trigger;
a pasted solution or prompt does. Short targets (a one-line `return a + b`) are only caught as
part of their whole problem.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from codegemma.atomic import atomic_path

from .hashing import normalise, window_hashes

WINDOW_BYTES = 48
SAMPLE_MOD = 4
MIN_WINDOWS = 6
THRESHOLD = 0.5
_SKIP_FILES = {"example_samples.jsonl"}


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """--data-dir, else $CODEGEMMA_DATA_DIR, else <checkout>/../shared/benchmarks (None if absent)."""
    candidates = [data_dir, os.environ.get("CODEGEMMA_DATA_DIR"),
                  str(Path(__file__).resolve().parents[3] / "shared" / "benchmarks")]
    for c in candidates:
        if c:
            p = Path(c)
            if data_dir and c == data_dir and not p.is_dir():
                raise FileNotFoundError(f"--data-dir {p}: no such directory (benchmark data for decontamination)")
            if p.is_dir():
                return p
    return None


def _records(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if path.name.endswith(".json"):
            data = json.load(fh)
            yield from (data if isinstance(data, list) else [])
            return
        for line in fh:
            if line.strip():
                yield json.loads(line)


def benchmark_targets(data_dir: Path) -> list[tuple[str, str]]:
    """(benchmark name, target text) for every prompt, solution and whole problem, deduplicated."""
    seen, out = set(), []
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name not in _SKIP_FILES
                   and p.name.endswith((".jsonl", ".jsonl.gz", ".json")) and p.name != "metadata.json")
    for path in files:
        bench = path.relative_to(data_dir).parts[0]
        for rec in _records(path):
            if not isinstance(rec, dict):
                continue
            prompt = rec.get("prompt") if isinstance(rec.get("prompt"), str) else rec.get("text")
            solution = rec.get("canonical_solution") if isinstance(rec.get("canonical_solution"), str) else rec.get("code")
            suffix = rec.get("suffix") if isinstance(rec.get("suffix"), str) else ""
            parts = [t for t in (prompt, solution) if isinstance(t, str)]
            texts = parts + ([(prompt or "") + (solution or "") + suffix] if len(parts) == 2 else [])
            if suffix and len(parts) == 2:
                # infilling: the "solution" is a removed span (often a few generic lines) and the
                # prompt a prefix; only the whole function identifies the problem
                texts = texts[-1:]
            for t in texts:
                key = normalise(t)
                if key and key not in seen:
                    seen.add(key)
                    out.append((bench, t))
    return out


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    # cheaper than np.unique for the many small arrays of a corpus
    if a.size < 2:
        return a
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


class Decontaminator:
    """Index of sampled window hashes of benchmark targets; `check(text)` names a matched benchmark."""

    def __init__(self, hashes: np.ndarray, target_ids: np.ndarray, target_sizes: np.ndarray, names: list[str],
                 unique: np.ndarray | None = None):
        self.hashes = hashes            # uint64 [pairs], sorted
        self.target_ids = target_ids    # int32 [pairs]: the target each hash belongs to
        self.target_sizes = target_sizes  # int32 [targets]: sampled windows per target
        self.names = names              # benchmark name per target
        self.unique = _sorted_unique(hashes) if unique is None else unique

    @classmethod
    def build(cls, data_dir: Path) -> "Decontaminator":
        # All targets in one buffer, hashed in one vectorised pass; windows that straddle two
        # targets are discarded, so the result equals hashing each target on its own.
        targets = benchmark_targets(data_dir)
        blobs = [normalise(t) for _, t in targets]
        ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        h, pos = window_hashes(b"".join(blobs), WINDOW_BYTES, SAMPLE_MOD, return_positions=True)
        tid = np.searchsorted(ends, pos, side="right")
        inside = (tid < len(blobs))
        inside[inside] &= pos[inside] + WINDOW_BYTES <= ends[tid[inside]]
        h, tid = h[inside], tid[inside]
        sizes = np.bincount(tid, minlength=len(blobs))
        keep = sizes >= MIN_WINDOWS                   # targets too short to judge are left out
        remap = np.cumsum(keep) - 1
        sel = keep[tid]
        h, tid = h[sel], remap[tid[sel]].astype(np.int32)
        names = [targets[i][0] for i in np.flatnonzero(keep)]
        order = np.argsort(h, kind="stable")
        return cls(h[order], tid[order], sizes[keep].astype(np.int32), names)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:    # keeps the .npz suffix, so savez adds none
            np.savez(tmp, hashes=self.hashes, target_ids=self.target_ids, target_sizes=self.target_sizes,
                     names=np.asarray(self.names), unique=self.unique)

    @classmethod
    def load(cls, path: Path) -> "Decontaminator":
        with np.load(path) as z:
            return cls(z["hashes"], z["target_ids"], z["target_sizes"], [str(x) for x in z["names"]], z["unique"])

    def __len__(self) -> int:
        return len(self.names)

    def check(self, normalised: bytes) -> str | None:
        """The benchmark a (whitespace-normalised) file is contaminated with, or None."""
        if not self.names:
            return None
        h = _sorted_unique(window_hashes(normalised, WINDOW_BYTES, SAMPLE_MOD))
        if h.size == 0:
            return None
        pos = np.searchsorted(self.unique, h)
        pos[pos == self.unique.size] = 0
        hits = h[self.unique[pos] == h]
        if hits.size < MIN_WINDOWS * THRESHOLD:
            return None
        lo = np.searchsorted(self.hashes, hits, side="left")
        hi = np.searchsorted(self.hashes, hits, side="right")
        idx = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])
        counts = np.bincount(self.target_ids[idx], minlength=len(self.names))
        bad = np.flatnonzero(counts >= THRESHOLD * self.target_sizes)
        return self.names[int(bad[0])] if bad.size else None
