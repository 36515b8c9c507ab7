"""The GPU decode paths (CUDA graphs, torch.compile + CUDA graphs) give the eager greedy tokens."""

from __future__ import annotations

import pytest
import torch

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _model(kv_heads: int, seed: int = 0):
    cfg = get_preset("debug").replace(num_key_value_heads=kv_heads)
    model = Gemma(cfg).init_weights(seed)
    with torch.no_grad():  # larger weights than the init so greedy output varies (see tests/infer/conftest.py)
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if "embed" in name else 0.3))
        model.embed_tokens.weight[:108] = 0.0  # control tokens never win: runs are full length
    return model.cuda()


def _run(model, tok, mode, prompts, params):
    with Engine(model, tok, max_slots=4, max_seq_len=1024, decode=mode, warmup=mode != "eager",
                compile_prefill=mode == "compile") as engine:
        assert engine.stats()["cuda_graphs"] == (0 if mode == "eager" else 3)  # batch buckets 1, 2, 4
        handles = [engine.submit(p, sp) for p, sp in zip(prompts, params)]
        out = [h.result(timeout=600).token_ids for h in handles]
        # A request that joins later lands in another batch bucket and, past 256, another kv bucket.
        out.append(engine.submit(prompts[0], SamplingParams(max_new_tokens=300)).result(timeout=600).token_ids)
        assert engine.stats()["cuda_graphs"] >= (0 if mode == "eager" else 4)  # + a longer kv bucket
    return out


@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("mode", ["graphs", "compile"])
def test_graph_decode_matches_eager(small_tokenizer_dir, kv_heads, mode):
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    model = _model(kv_heads)
    prompts = [[2, 300, 301, 302], [2] + list(range(200, 260)), [2, 400], [2, 150, 151]]
    params = [SamplingParams(max_new_tokens=n) for n in (40, 25, 60, 10)]
    params[3] = SamplingParams(max_new_tokens=10, temperature=0.9, seed=3)
    want = _run(model, tok, "eager", prompts, params)
    got = _run(model, tok, mode, prompts, params)
    assert got == want
    assert len(set(map(tuple, want))) == len(want)


@pytest.mark.parametrize("mode", ["graphs", "compile"])
def test_speculation_and_fused_weights_match_plain_eager_decoding(small_tokenizer_dir, mode):
    """Keystroke-like traces with CUDA-graph verification passes (and fused q/k/v, gate/up) give the
    tokens of plain, unfused, eager decoding; drafts are accepted."""
    from codegemma.infer.fuse import is_fused
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    ref_model, model = _model(2), _model(2)
    base = [2] + list(range(200, 240))
    params = SamplingParams(max_new_tokens=40)

    def trace(engine):
        out = []
        first = engine.submit(base, params).result(timeout=600).token_ids
        for prompt in ([base] * 2 + [base + first[:i] for i in (1, 2, 5)] + [base[:-1]]):
            out.append(engine.submit(prompt, params).result(timeout=600).token_ids)
        # a batch: drafted rows verified together while another row takes plain steps
        hs = [engine.submit(p, params) for p in (base, base + first[:3], [2, 400, 401])]
        out += [h.result(timeout=600).token_ids for h in hs]
        return [first] + out

    with Engine(ref_model, tok, max_slots=4, max_seq_len=1024, decode="eager", speculate=0, fuse=False) as ref:
        want = trace(ref)
    assert not is_fused(ref_model)
    with Engine(model, tok, max_slots=4, max_seq_len=1024, decode=mode) as engine:
        got = trace(engine)
        stats = engine.stats()
    assert is_fused(model)
    assert got == want
    assert stats["spec_accepted_tokens"] > 0 and stats["decode_steps"] < stats["tokens_generated"]
