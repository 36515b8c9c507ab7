"""Nothing one request does hurts another (issue 14, engine side): a request whose sampling or
forward pass goes wrong fails alone with a clear EngineError, and every other request in the same
decode step finishes exactly as if it had run alone. Faults are injected from outside, through a
copy of the model."""

from __future__ import annotations

import copy
import math

import pytest

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.requests import EngineError

POISON = 97  # a token none of the test prompts contains


def _alone(loaded, prompt, params):
    model, tok = loaded
    with Engine(model, tok, max_slots=1, max_seq_len=512) as e:
        return e.submit(prompt, params).result(timeout=60).token_ids


def _batch(engine, jobs):
    """Submit all at once (they share decode steps), then wait."""
    handles = [engine.submit(p, sp) for p, sp in jobs]
    out = []
    for h in handles:
        try:
            out.append(h.result(timeout=120).token_ids)
        except EngineError as exc:
            out.append(exc)
    return out


def test_a_tiny_temperature_is_greedy_and_its_batch_finishes(loaded, P):
    """temperature 3.7777e-39 made the whole decode step fail on main (every request in it got
    an error); it is greedy, as llama.cpp treats temperature <= 0."""
    model, tok = loaded
    jobs = [(P[0], SamplingParams(max_new_tokens=10)),
            (P[1], SamplingParams(max_new_tokens=10, temperature=3.7777e-39)),
            (P[2], SamplingParams(max_new_tokens=10, temperature=0.9, seed=1)),
            (P[3], SamplingParams(max_new_tokens=10, temperature=1e-300, repetition_penalty=5e-6, top_k=10 ** 30))]
    with Engine(model, tok, max_slots=4, max_seq_len=512) as engine:
        got = _batch(engine, jobs)
    assert got[0] == _alone(loaded, *jobs[0])
    assert got[1] == _alone(loaded, P[1], SamplingParams(max_new_tokens=10))
    assert got[2] == _alone(loaded, *jobs[2])
    assert got[3] == _alone(loaded, P[3], SamplingParams(max_new_tokens=10, repetition_penalty=5e-6))


@pytest.fixture
def nan_model(loaded):
    """A copy of the model whose decode passes return NaN logits for the rows fed POISON (as an
    overflow in one request's activations would): non-finite values in that request's row only."""
    model, tok = loaded
    bad = copy.deepcopy(model)
    real = bad.forward

    def forward(tokens, *args, **kwargs):
        out = real(tokens, *args, **kwargs)
        return out.masked_fill((tokens == POISON).any(-1)[:, None, None], math.nan)

    bad.forward = forward
    return bad, tok


def test_non_finite_logits_fail_that_request_alone(loaded, nan_model, P):
    model, tok = nan_model
    want = [_alone(loaded, P[i], SamplingParams(max_new_tokens=12)) for i in (0, 2)]
    sampled = SamplingParams(max_new_tokens=12, temperature=0.8, seed=4)
    want.append(_alone(loaded, P[3], sampled))
    # forced to generate POISON first, so its second step feeds NaN into its own row of a batch
    forced = SamplingParams(max_new_tokens=12, logit_bias={POISON: 1e6})
    with Engine(model, tok, max_slots=4, max_seq_len=512) as engine:
        got = _batch(engine, [(P[0], SamplingParams(max_new_tokens=12)), (P[1], forced),
                              (P[2], SamplingParams(max_new_tokens=12)), (P[3], sampled)])
        assert isinstance(got[1], EngineError) and "non-finite" in str(got[1])
        assert [got[0], got[2], got[3]] == want
        # its slot's cache was dropped: the engine serves the same prompts normally afterwards
        assert engine.submit(P[1], SamplingParams(max_new_tokens=12)).result(timeout=60).token_ids == \
            _alone(loaded, P[1], SamplingParams(max_new_tokens=12))
        stats = engine.stats()
    assert stats["requests_failed"] == 1 and stats["active_slots"] == 0


def test_a_step_that_raises_is_rerun_request_by_request(loaded, P):
    """A decode step that raises (an error in one row's input, say) is retried per request: only
    the request that fails alone fails; the others continue as if alone, with drafts or without."""
    model, tok = loaded
    faulty = copy.deepcopy(model)
    real = faulty.forward

    def forward(tokens, *args, **kwargs):
        if bool((tokens == POISON).any()):
            raise RuntimeError("kernel failure (injected)")
        return real(tokens, *args, **kwargs)

    faulty.forward = forward  # this instance's decode and verification passes
    forced = SamplingParams(max_new_tokens=10, logit_bias={POISON: 1e6})
    others = [(P[0], SamplingParams(max_new_tokens=10)), (P[2], SamplingParams(max_new_tokens=10, temperature=0.7, seed=2))]
    want = [_alone(loaded, *job) for job in others]
    for speculate in (0, 8):
        with Engine(faulty, tok, max_slots=3, max_seq_len=512, speculate=speculate) as engine:
            for p, sp in others:  # leave drafts behind in the slots
                engine.submit(p, sp).result(timeout=60)
            got = _batch(engine, [others[0], (P[1], forced), others[1]])
            assert isinstance(got[1], EngineError) and "injected" in str(got[1])
            assert [got[0], got[2]] == want
            assert engine.stats()["requests_failed"] == 1
