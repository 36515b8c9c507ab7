"""Sampling against transformers' logits processors, and per-request seeds."""

from __future__ import annotations

import pytest
import torch

from codegemma.infer.sampling import SamplingParams, distribution, make_generator, sample


def _logits(b=3, v=50, seed=0):
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_the_argmax():
    logits = _logits()
    out = sample(logits, [SamplingParams()] * 3, [None] * 3)
    assert out.tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.6), (0.9, 8, 0.8)])
def test_distribution_matches_transformers_warpers(temperature, top_k, top_p):
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = _logits()
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    want = ref.softmax(-1)
    p = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    got = distribution(logits, [p] * 3)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_repetition_penalty_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = _logits()
    seen = torch.tensor([[1, 4, 4, 9], [0, 2, 3, 7], [5, 6, 7, 8]])
    want = RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone()).argmax(-1)
    params = [SamplingParams(repetition_penalty=1.3)] * 3
    got_dist = distribution(logits, params, history=list(seen))
    assert got_dist.argmax(-1).tolist() == want.tolist()
    assert sample(logits, params, [None] * 3, history=list(seen)).tolist() == want.tolist()


def test_samples_stay_in_the_allowed_set_and_follow_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -5.0]])
    p = SamplingParams(temperature=1.0, top_k=3)
    gens = [make_generator(i) for i in range(1)]
    counts = torch.zeros(5)
    for _ in range(3000):
        counts[sample(logits, [p], gens)[0]] += 1
    assert counts[3:].sum() == 0
    want = logits[0, :3].softmax(-1)
    torch.testing.assert_close(counts[:3] / counts.sum(), want, atol=0.03, rtol=0)


def test_a_seeded_row_does_not_depend_on_its_neighbours():
    logits = _logits(b=4, v=200)
    p = SamplingParams(temperature=1.0, seed=3)
    alone = [sample(logits[1:2], [p], [g])[0].item() for g in [make_generator(3)] for _ in range(10)]
    g = make_generator(3)
    mixed = []
    for step in range(10):
        others = [make_generator(100 + step), None, make_generator(200 + step)]
        params = [SamplingParams(temperature=0.5), p, SamplingParams(), SamplingParams(temperature=2.0, top_p=0.5)]
        mixed.append(sample(logits, params, [others[0], g, None, others[2]])[1].item())
    assert alone == mixed


def test_invalid_parameters_are_refused():
    for bad in (dict(temperature=-1), dict(top_p=0.0), dict(top_k=-1), dict(repetition_penalty=0),
                dict(max_new_tokens=-1), dict(stop=("",)), dict(max_time_ms=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(stop="x").stop == ("x",)
