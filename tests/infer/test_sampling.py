"""Sampler chains against transformers' and llama.cpp's definitions, the infill sampler, values the
API accepts being computable, and per-request seeds."""

from __future__ import annotations

import math

import pytest
import torch

from codegemma.infer.samplers import Run, TokenChooser
from codegemma.infer.sampling import SamplingParams, make_generator


def _logits(b=3, v=50, seed=0):
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * 3


def _pick(chooser, logits, params, gens, seen=None):
    runs = [Run(p, i, [], g, i if seen is not None else -1) for i, (p, g) in enumerate(zip(params, gens))]
    out = chooser.choose(logits, runs, seen)
    assert all(c.error is None for c in out), [c.error for c in out]
    return [c.tokens[0] for c in out]


def test_greedy_rows_take_the_argmax():
    logits = _logits()
    assert _pick(TokenChooser(), logits, [SamplingParams()] * 3, [None] * 3) == logits.argmax(-1).tolist()


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.6), (0.9, 8, 0.8)])
def test_transformers_order_matches_its_warpers(temperature, top_k, top_p):
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = _logits()
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    p = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, samplers=("temperature", "top_k", "top_p"))
    torch.testing.assert_close(TokenChooser().distribution(logits, [p] * 3), ref.softmax(-1), atol=1e-6, rtol=1e-5)


def test_default_chain_is_llamacpps_order():
    """penalties, top_k, top_p, min_p, then temperature (the nucleus is taken before temperature)."""
    logits = _logits(b=1, v=40)
    p = SamplingParams(temperature=0.5, top_k=12, top_p=0.7, min_p=0.05)
    l = logits[0].clone()
    keep = l.topk(12).indices
    cut = torch.full_like(l, -math.inf)
    cut[keep] = l[keep]
    probs = cut.softmax(-1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    cut[order[before >= 0.7]] = -math.inf
    cut[cut < cut.max() + math.log(0.05)] = -math.inf
    want = (cut / 0.5).softmax(-1)
    torch.testing.assert_close(TokenChooser().distribution(logits, [p])[0], want, atol=1e-6, rtol=1e-5)
    # a list without "temperature" samples at temperature 1, as llama.cpp does
    q = SamplingParams(temperature=0.5, top_k=12, samplers=("top_k",))
    torch.testing.assert_close(TokenChooser().distribution(logits, [q])[0],
                               torch.where(torch.isin(torch.arange(40), keep), l, -math.inf).softmax(-1))


def test_repetition_penalty_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = _logits()
    seen_ids = torch.tensor([[1, 4, 4, 9], [0, 2, 3, 7], [5, 6, 7, 8]])
    want = RepetitionPenaltyLogitsProcessor(1.3)(seen_ids, logits.clone())
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, seen_ids, True)
    params = [SamplingParams(repetition_penalty=1.3, temperature=1.0)] * 3
    torch.testing.assert_close(TokenChooser().distribution(logits, params, seen), want.softmax(-1))
    greedy = [SamplingParams(repetition_penalty=1.3)] * 3
    assert _pick(TokenChooser(), logits, greedy, [None] * 3, seen) == want.argmax(-1).tolist()


def test_logit_bias_bans_and_boosts():
    logits = _logits(b=1, v=20)
    top = int(logits.argmax())
    p = SamplingParams(logit_bias={top: -math.inf, 3: 1e12})  # 1e12 is clamped, still the winner
    assert _pick(TokenChooser(), logits, [p], [None]) == [3]
    banned = SamplingParams(temperature=1.0, logit_bias=[(top, -math.inf)])
    assert TokenChooser().distribution(logits, [banned])[0, top] == 0
    everything = SamplingParams(temperature=1.0, logit_bias=[(i, -math.inf) for i in range(20)])
    out = TokenChooser().choose(logits, [Run(everything, 0, [], make_generator(0))])
    assert out[0].error and "no token" in out[0].error


def test_samples_stay_in_the_allowed_set_and_follow_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -5.0]])
    p = SamplingParams(temperature=1.0, top_k=3)
    gen = make_generator(0)
    counts = torch.zeros(5)
    chooser = TokenChooser()
    for _ in range(3000):
        counts[_pick(chooser, logits, [p], [gen])[0]] += 1
    assert counts[3:].sum() == 0
    torch.testing.assert_close(counts[:3] / counts.sum(), logits[0, :3].softmax(-1), atol=0.03, rtol=0)


def test_a_seeded_row_does_not_depend_on_its_neighbours():
    logits = _logits(b=4, v=200)
    p = SamplingParams(temperature=1.0, seed=3)
    chooser = TokenChooser()
    g = make_generator(3)
    alone = [_pick(chooser, logits[1:2], [p], [g])[0] for _ in range(10)]
    g = make_generator(3)
    mixed = []
    for step in range(10):
        params = [SamplingParams(temperature=0.5), p, SamplingParams(), SamplingParams(temperature=2.0, top_p=0.5)]
        gens = [make_generator(100 + step), g, None, make_generator(200 + step)]
        mixed.append(_pick(chooser, logits, params, gens)[1])
    assert alone == mixed


# ---- llama.cpp's infill sampler -------------------------------------------------------------------
class _Pieces:
    """A tokenizer stand-in for the infill sampler: ids -> text pieces; 0 is an end-of-generation id."""
    pieces = {0: "<eos>", 1: "for", 2: "fo", 3: "f", 4: "while", 5: "x", 6: "if"}

    def has(self, name):
        return False

    eos_id = 0
    special_ids = {"eos": 0}
    backend = None

    def id_to_piece(self, i):
        return self.pieces[i]

    def piece_bytes(self, i):
        return self.pieces[i].encode()


def _infill_dist(logit_values, samplers=("infill",)):
    chooser = TokenChooser(_Pieces(), stop_ids=[0])
    logits = torch.tensor([logit_values])
    return chooser.distribution(logits, [SamplingParams(temperature=1.0, samplers=samplers)])[0]


def test_infill_merges_prefix_tokens_and_keeps_the_likely_ones():
    # "fo" and "f" are prefixes of "for": their mass joins "for"; "while" and "if" are unlikely,
    # the end-of-generation token is kept (it always is unless text is far more likely)
    d = _infill_dist([-4.0, 2.0, 1.5, 1.0, 0.0, -9.0, -1.0])
    assert d[1] > 0.9 and d[2] == d[3] == d[4] == d[6] == 0 and d[0] > 0
    assert abs(float(d.sum()) - 1) < 1e-6


def test_infill_picks_end_of_generation_when_text_is_unlikely():
    d = _infill_dist([2.0, 1.0, -0.5, -0.5, 0.9, 0.8, 0.7])
    assert d[0] == 1.0
    # nothing textual survives the thresholds: a single end-of-turn/eos token
    d = _infill_dist([-30.0, 1.0, -30.0, -30.0, 1.0, 1.0, 1.0], samplers=("top_k", "infill"))
    assert float(d.sum()) == 1.0


# ---- what the API accepts, the engine computes (issue 14) --------------------------------------------
def test_tiny_temperatures_are_greedy_and_huge_ones_finite():
    logits = _logits(b=1, v=30)
    chooser = TokenChooser()
    for t in (3.7777e-39, 1e-300, 1e-7):
        p = SamplingParams(temperature=t, seed=0)
        assert p.greedy
        assert _pick(chooser, logits, [p], [make_generator(0)]) == [int(logits.argmax())]
    d = chooser.distribution(logits, [SamplingParams(temperature=1e300)])[0]
    assert torch.isfinite(d).all() and abs(float(d.sum()) - 1) < 1e-5


def test_the_smallest_cuts_keep_the_most_likely_token():
    # top_p 5e-324 is 0 in float32: compared on the device it cut every token (a 500 found by the
    # HTTP fuzzer on /v1/fim/completions); llama.cpp keeps at least one token (min_keep)
    logits = _logits(b=1, v=30)
    chooser = TokenChooser()
    for kw in ({"top_p": 5e-324}, {"top_p": 1e-45}, {"min_p": 1.0}, {"top_p": 5e-324, "top_k": 5}):
        p = SamplingParams(temperature=0.7, seed=0, **kw)
        assert _pick(chooser, logits, [p], [make_generator(0)]) == [int(logits.argmax())], kw


def test_huge_top_k_is_no_cut():
    for k in (10 ** 30, 1e30, 2 ** 63):
        assert SamplingParams(top_k=k).top_k == 0
    assert SamplingParams(top_k=40.0).top_k == 40


@pytest.mark.parametrize("field,value", [
    ("repetition_penalty", 5e-324), ("repetition_penalty", math.inf), ("repetition_penalty", math.nan),
    ("repetition_penalty", 0), ("repetition_penalty", 1e300), ("temperature", math.inf), ("temperature", -1),
    ("temperature", math.nan), ("top_p", math.nan), ("top_p", 0.0), ("top_p", 1.5), ("min_p", -0.1),
    ("min_p", math.nan), ("top_k", -1), ("top_k", 2.5), ("top_k", math.inf), ("max_new_tokens", -1),
    ("max_time_ms", 0), ("max_time_ms", math.inf), ("seed", 2 ** 64), ("seed", -1), ("logprobs", 21),
    ("samplers", ("top_k", "mirostat")), ("logit_bias", {3: math.nan}), ("logit_bias", {3: math.inf}),
    ("logit_bias", {-1: 1.0}), ("temperature", "hot"), ("top_k", True), ("stop", ("",)),
])
def test_values_that_cannot_be_computed_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert field.split("_")[0] in str(err.value) or field in str(err.value)


def test_accepted_values_are_normalised():
    p = SamplingParams(stop="x", samplers=["top_k", "infill"], logit_bias={5: 1.5, 2: -math.inf}, seed=2 ** 64 - 1)
    assert p.stop == ("x",) and p.samplers == ("top_k", "infill")
    assert p.logit_bias == ((2, -math.inf), (5, 1.5))
    assert SamplingParams(repetition_penalty=1e-6).repetition_penalty == 1e-6
