import math
import random

import pytest

from codegemma.eval import metrics


def direct(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_the_binomial_formula():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        assert metrics.pass_at_k(n, c, k) == pytest.approx(direct(n, c, k), abs=1e-9)


def test_edge_cases():
    assert metrics.pass_at_k(10, 0, 1) == 0.0
    assert metrics.pass_at_k(10, 10, 10) == 1.0
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 1, 6)


def test_summarize_reports_only_k_every_task_has():
    counts = {"a": (10, 3), "b": (5, 5)}
    out = metrics.summarize(counts, [1, 5, 10])
    assert set(out) == {"pass@1", "pass@5"}
    assert out["pass@1"] == pytest.approx((0.3 + 1.0) / 2)
    assert out["pass@5"] == pytest.approx((direct(10, 3, 5) + 1.0) / 2)


def test_parse_ks():
    assert metrics.parse_ks("1,10,100") == [1, 10, 100]
    with pytest.raises(ValueError):
        metrics.parse_ks("1,x")
    with pytest.raises(ValueError):
        metrics.parse_ks("0")
