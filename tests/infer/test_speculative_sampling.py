"""Lossless speculative sampling: sampled requests use drafts, and their output distribution is
that of plain sampling (the rejection rule of Leviathan et al. / Chen et al. for point-mass drafts)."""

from __future__ import annotations

import collections
import copy

import pytest
import torch

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.samplers import Run, TokenChooser
from codegemma.infer.sampling import make_generator

N_NEW = 6


def _chi2_homogeneity(a: collections.Counter, b: collections.Counter, min_expected: float = 5.0) -> tuple[float, float]:
    """Chi-square test that two samples come from one distribution: (statistic, p-value). Categories
    with too few expected counts are pooled into one."""
    na, nb = sum(a.values()), sum(b.values())
    keys = sorted(set(a) | set(b), key=lambda k: -(a[k] + b[k]))
    cells, rest = [], [0, 0]
    for k in keys:
        tot = a[k] + b[k]
        if tot * min(na, nb) / (na + nb) >= min_expected:
            cells.append((a[k], b[k]))
        else:
            rest[0] += a[k]
            rest[1] += b[k]
    if sum(rest):
        cells.append(tuple(rest))
    stat = 0.0
    for xa, xb in cells:
        tot = xa + xb
        ea, eb = tot * na / (na + nb), tot * nb / (na + nb)
        stat += (xa - ea) ** 2 / ea + (xb - eb) ** 2 / eb
    df = max(1, len(cells) - 1)
    p = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, p


@pytest.fixture(scope="module")
def peaked(loaded):
    """The test model with its output logits scaled up 20x (final norm weight): peaked
    distributions, as a trained model has, so that sampled drafts are often accepted."""
    model, tok = loaded
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.norm.weight.copy_((1 + model.norm.weight) * 20 - 1)
    return model, tok


def _samples(engine, prompt, make_params, seeds, warm_with=None):
    """Completions of `prompt` for each seed; before each, the slot gets a completion to draft from."""
    out = []
    for s in seeds:
        if warm_with is not None:
            engine.submit(prompt, warm_with).result()  # leaves its completion in the (only) slot
        out.append(tuple(engine.submit(prompt, make_params(s)).result().token_ids))
    return out


def test_sampled_output_distribution_is_unchanged_by_drafts(peaked, P):
    """Chi-square over seeded samples: drafts on (different seeds) vs drafts off; llama.vim's chain
    plus a repetition penalty, whose history includes accepted drafts. Drafts must be used."""
    model, tok = peaked
    prompt = P[1]

    def params(seed):
        return SamplingParams(max_new_tokens=N_NEW, temperature=1.0, top_k=40, top_p=0.99, repetition_penalty=1.3,
                              samplers=("penalties", "top_k", "top_p", "temperature"), seed=seed)

    greedy = SamplingParams(max_new_tokens=N_NEW + 4)  # a likely continuation: good drafts
    n = 200
    with Engine(model, tok, max_slots=1, max_seq_len=256, speculate=0) as off, \
            Engine(model, tok, max_slots=1, max_seq_len=256, speculate=8) as on:
        a = _samples(off, prompt, params, range(n))
        b = _samples(on, prompt, params, range(10_000, 10_000 + n), warm_with=greedy)
        stats = on.stats()
    assert stats["spec_draft_tokens"] > 0 and stats["spec_accepted_tokens"] > 0
    assert stats["decode_steps"] < n * (N_NEW - 1) + 2 * n * N_NEW  # drafts saved passes
    for depth in (1, 2, 3):  # the first `depth` tokens as one outcome
        stat, p = _chi2_homogeneity(collections.Counter(x[:depth] for x in a), collections.Counter(x[:depth] for x in b))
        assert p > 1e-3, (depth, stat, p)
    assert len(set(a)) > 5  # the test samples something, not one greedy path


def test_a_seeded_request_gives_the_same_tokens_with_drafts_on_and_off(peaked, P):
    """The coupling: one uniform per emitted token either way, so seeded output is reproducible."""
    model, tok = peaked
    configs = [SamplingParams(max_new_tokens=14, temperature=0.8, seed=5),
               SamplingParams(max_new_tokens=14, temperature=1.0, top_k=40, top_p=0.99, samplers=("top_k", "top_p", "infill"),
                              seed=6),
               SamplingParams(max_new_tokens=14, temperature=1.2, min_p=0.02, repetition_penalty=1.2, seed=7),
               SamplingParams(max_new_tokens=14, temperature=0.7, logit_bias=((300, -float("inf")),), seed=8)]
    with Engine(model, tok, max_slots=2, max_seq_len=256, speculate=0) as off, \
            Engine(model, tok, max_slots=2, max_seq_len=256, speculate=10) as on:
        for p in configs:
            for prompt in P[:2]:
                want = off.submit(prompt, p).result()
                on.submit(prompt, SamplingParams(max_new_tokens=14)).result()  # drafts to verify
                got = on.submit(prompt, p).result()
                assert got.token_ids == want.token_ids and got.text == want.text
        assert on.stats()["spec_accepted_tokens"] > 0


def test_the_rejection_rule_accepts_with_the_target_probability():
    """One row, a point-mass draft x: accepted with probability p(x); when rejected, the token is
    drawn from p without x, renormalised (the residual)."""
    logits = torch.tensor([[1.5, 1.0, 0.2, -0.5, -2.0, 0.7]])
    params = SamplingParams(temperature=1.0)
    p = logits[0].softmax(-1)
    draft = 1
    chooser = TokenChooser()
    gen = make_generator(0)
    rows = torch.cat([logits, logits])  # the draft's row, then the row after it
    n, accepted, rejected = 4000, 0, collections.Counter()
    for _ in range(n):
        (c,) = chooser.choose(rows, [Run(params, 0, [draft], gen)])
        if len(c.tokens) == 2:
            assert c.tokens[0] == draft
            accepted += 1
        else:
            rejected[c.tokens[0]] += 1
    assert abs(accepted / n - float(p[draft])) < 0.03
    assert rejected[draft] == 0
    residual = p.clone()
    residual[draft] = 0
    residual /= residual.sum()
    got = torch.tensor([rejected[i] for i in range(6)], dtype=torch.float64) / sum(rejected.values())
    torch.testing.assert_close(got, residual.double(), atol=0.03, rtol=0)


def test_penalised_rows_see_the_drafts_before_them():
    """Row i of a verification is processed with drafts[:i] in its history: a penalised draft
    token loses probability at the rows after it, exactly as it would in plain decoding."""
    v = 8
    logits = torch.ones(3, v)
    logits[:, 5] = 3.0
    seen = torch.zeros(1, v, dtype=torch.bool)
    p = SamplingParams(repetition_penalty=50.0)  # greedy: argmax after the penalty
    (c,) = TokenChooser().choose(logits, [Run(p, 0, [5, 5], None, 0)], seen)
    assert c.tokens == [5, 0]  # row 0 takes 5; row 1 has 5 in its history: 3/50 < 1, so id 0 wins
