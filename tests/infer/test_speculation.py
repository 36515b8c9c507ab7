"""Speculative decoding from the engine's own previous completions gives exactly the greedy tokens
of plain decoding, and the fused q/k/v and gate/up weights compute the same model."""

from __future__ import annotations

import copy

import pytest
import torch

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.fuse import FusedGeGLU, FusedQKVAttention, fuse_projections, is_fused
from codegemma.infer.speculate import Drafter, _typed_suggestion


def _engines(loaded, **kw):
    model, tok = loaded
    kw.setdefault("max_slots", 2)
    kw.setdefault("max_seq_len", 512)
    return Engine(model, tok, speculate=0, **kw), Engine(model, tok, speculate=15, **kw)


def _trace(engine, prompts, params):
    return [engine.submit(p, params).result() for p in prompts]


def _fim(tok, prefix_ids, suffix_ids):
    return [tok.bos_id, tok.token_id("fim_prefix")] + prefix_ids + [tok.token_id("fim_suffix")] + \
        suffix_ids + [tok.token_id("fim_middle")]


def _same(a, b):
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.text for c in a] == [c.text for c in b]
    assert [c.finish_reason for c in a] == [c.finish_reason for c in b]


def test_keystroke_traces_match_plain_greedy_and_count_accepted_drafts(loaded):
    _, tok = loaded
    prefix = tok.encode("import os\nimport sys\n\n\nclass Greeter:\n    def __init__(self, name):\n        ")
    suffix = tok.encode("\n\n    def greet(self):\n        return self.name\n")
    params = SamplingParams(max_new_tokens=16)
    plain, spec = _engines(loaded)
    with plain, spec:
        # 1. the same prompt again (an editor re-requests after moving the cursor back)
        same = [_fim(tok, prefix, suffix)] * 3
        # 2. the user types what was suggested, one token per keystroke
        first = plain.submit(_fim(tok, prefix, suffix), params).result().token_ids
        typed = [_fim(tok, prefix + first[:i], suffix) for i in range(0, 6)]
        # 3. the user types something else (a token inserted before the cursor at each keystroke)
        other = [_fim(tok, prefix + tok.encode("x = 1")[:i], suffix) for i in range(1, 4)]
        # 4. backspace: the prompt shrinks
        back = [_fim(tok, prefix[:-i], suffix) for i in range(1, 4)]
        for prompts in (same, typed, other, back):
            _same(_trace(plain, prompts, params), _trace(spec, prompts, params))
        s = spec.stats()
        assert plain.stats()["spec_steps"] == 0
        assert s["spec_steps"] > 0 and s["spec_accepted_tokens"] > 0
        assert s["spec_accepted_tokens"] <= s["spec_draft_tokens"]
        # Speculation saves passes: fewer decode steps than generated tokens (after prefill).
        assert s["decode_steps"] < plain.stats()["decode_steps"]


def test_repeated_prompt_is_verified_in_one_pass(loaded, P):
    _, spec = _engines(loaded, max_slots=1)
    with spec:
        a = spec.submit(P[1], SamplingParams(max_new_tokens=16)).result()
        before = spec.stats()
        b = spec.submit(P[1], SamplingParams(max_new_tokens=16)).result()
        after = spec.stats()
    assert a.token_ids == b.token_ids and b.completion_tokens == 16
    # first token from the prefill, then 14 drafts confirmed + 1 more token in a single pass
    assert after["decode_steps"] - before["decode_steps"] == 1
    assert after["spec_accepted_tokens"] - before["spec_accepted_tokens"] == 14


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 17])
def test_max_new_tokens_boundaries(loaded, n, P):
    plain, spec = _engines(loaded, max_slots=1)
    with plain, spec:
        spec.submit(P[3], SamplingParams(max_new_tokens=20)).result()  # the draft source
        want = plain.submit(P[3], SamplingParams(max_new_tokens=n)).result()
        got = spec.submit(P[3], SamplingParams(max_new_tokens=n)).result()
    assert got.token_ids == want.token_ids and got.completion_tokens == n == len(want.token_ids)
    assert got.finish_reason == want.finish_reason == "length"


def test_stop_token_and_stop_string_inside_the_draft(loaded, P):
    _, tok = loaded
    plain, spec = _engines(loaded, max_slots=1)
    with plain, spec:
        full = spec.submit(P[1], SamplingParams(max_new_tokens=24)).result()  # the draft source
        ids = full.token_ids
        k = next(i for i in range(4, 20) if ids[i] not in ids[:i])
        pieces = [tok.decode([t]) for t in ids]
        j = next(i for i in range(5, len(pieces) - 1) if pieces[i] and pieces[i + 1])
        stop = pieces[j][-1] + pieces[j + 1][0]
        p_str = SamplingParams(max_new_tokens=24, stop=(stop,))
        for e in (plain, spec):
            e.stop_ids.add(ids[k])  # as if it were <eos>: the draft (ids) contains it
        got_tok, want_tok = (e.submit(P[1], SamplingParams(max_new_tokens=24)).result() for e in (spec, plain))
        for e in (plain, spec):
            e.stop_ids.discard(ids[k])
        spec.submit(P[1], SamplingParams(max_new_tokens=24)).result()  # full draft source again
        streamed = []
        h = spec.submit(P[1], p_str)
        streamed = "".join(ev.text for ev in h.events())
        got_str, want_str = h.result(), plain.submit(P[1], p_str).result()
        assert spec.stats()["spec_accepted_tokens"] > 0
    assert got_tok.token_ids == want_tok.token_ids == ids[:k + 1]
    assert got_tok.finish_reason == "stop" and got_tok.stop_token_id == ids[k]
    assert got_str.token_ids == want_str.token_ids and got_str.text == want_str.text == streamed
    assert got_str.finish_reason == "stop" and got_str.stop_text == stop


def test_speculation_in_a_batch_with_other_requests(loaded, P):
    params = [SamplingParams(max_new_tokens=n) for n in (20, 9, 14, 30)]
    params[2] = SamplingParams(max_new_tokens=14, temperature=0.9, top_k=40, seed=7)  # never speculates
    params[3] = SamplingParams(max_new_tokens=30, repetition_penalty=1.3)  # greedy, but penalised
    plain, spec = _engines(loaded, max_slots=3)
    with plain, spec:
        want = [plain.submit(p, sp).result() for p, sp in zip(P, params)]
        _trace(spec, P[:2], SamplingParams(max_new_tokens=20))  # leave drafts in two slots
        first = spec.submit(P[0], params[0])
        rest = [spec.submit(p, sp) for p, sp in zip(P[1:], params[1:])]
        got = [first.result()] + [h.result() for h in rest]
        assert spec.stats()["spec_accepted_tokens"] > 0
    _same(want, got)


def test_sampled_requests_never_speculate(loaded, P):
    _, spec = _engines(loaded, max_slots=1)
    with spec:
        for _ in range(2):
            spec.submit(P[1], SamplingParams(max_new_tokens=12, temperature=0.8, seed=1)).result()
        assert spec.stats()["spec_steps"] == 0


def test_drafter_sources():
    # typed suggestion: [9, 8] inserted where the old completion began with [9, 8, 7, 6]
    assert _typed_suggestion([1, 2, 9, 8, 3, 4], [1, 2, 3, 4], [9, 8, 7, 6]) == 2
    assert _typed_suggestion([1, 2, 9, 5, 3, 4], [1, 2, 3, 4], [9, 8, 7, 6]) is None
    assert Drafter([1, 2, 9, 8, 3, 4], [1, 2, 3, 4], [9, 8, 7, 6]).draft(5) == [7, 6]
    # the previous completion after the same last two tokens
    assert Drafter([5, 1, 3, 4], [1, 2, 3, 4], [7, 6, 5]).draft(2) == [7, 6]
    # the request's own text (prompt lookup), never its own end; k caps the length
    d = Drafter([5, 1, 2, 7, 7, 1, 2], None, None)
    assert d.draft(3) == [7, 7, 1] and d.draft(0) == []
    # byte-level hits that straddle two int32 tokens do not count
    assert Drafter([256, 0, 0, 1, 2], [3, 256, 2, 0], [4]).draft(3) == []
    d = Drafter([1, 2, 3, 1, 2], None, None)
    for _ in range(Drafter.MAX_MISSES):
        d.verified(0)
    assert d.draft(4) == []  # backs off after drafts keep failing


def test_fused_projections_compute_the_same_model_with_one_copy_of_the_weights(loaded, P):
    model, tok = loaded
    fused = copy.deepcopy(model)
    keys = list(fused.state_dict())
    n_bytes = sum(p.numel() for p in fused.parameters())
    assert fuse_projections(fused) == 2 * fused.config.num_hidden_layers
    assert fuse_projections(fused) == 0 and is_fused(fused)  # idempotent
    assert list(fused.state_dict()) == keys  # Hugging Face names, no extra entries
    layer = fused.layers[0]
    assert isinstance(layer.self_attn, FusedQKVAttention) and isinstance(layer.mlp, FusedGeGLU)
    # the parameters are views into the fused tensors: one copy of every weight
    assert layer.self_attn.q_proj.weight.data_ptr() == layer.self_attn.qkv_weight.data_ptr()
    assert layer.mlp.up_proj.weight.untyped_storage().data_ptr() == layer.mlp.gate_up_weight.untyped_storage().data_ptr()
    assert sum(p.numel() for p in fused.parameters()) == n_bytes
    ids = torch.tensor([P[1]])
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), model(ids), atol=1e-4, rtol=1e-4)
        with torch.no_grad():
            layer.mlp.gate_proj.weight.mul_(2.0)  # writing a parameter updates the fused tensor
        assert torch.equal(layer.mlp.gate_up_weight[:layer.mlp.gate_proj.weight.shape[0]], layer.mlp.gate_proj.weight)
    with Engine(copy.deepcopy(model), tok, max_slots=2, max_seq_len=512, fuse=True) as e, \
            Engine(model, tok, max_slots=2, max_seq_len=512) as ref:
        p = SamplingParams(max_new_tokens=24)
        assert [c.token_ids for c in e.generate(P, p)] == [c.token_ids for c in ref.generate(P, p)]
    assert not is_fused(model)
