"""Cached decoding equals the uncached forward: the model's own cache, and the engine's slot views
(rows out of order, kv_len cuts) through the serving attention paths (decode path, fused weights)."""

from __future__ import annotations

import copy

import pytest
import torch

from codegemma.infer.fuse import fuse_projections, use_decode_attention
from codegemma.infer.kv import SlotView
from codegemma.model.cache import KVCache
from codegemma.model.config import GemmaConfig
from codegemma.model.transformer import Gemma

CFG = GemmaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


def _model(variant: str) -> Gemma:
    m = Gemma(CFG).init_weights(0)
    with torch.no_grad():  # larger than the init, so every position's output differs
        gen = torch.Generator().manual_seed(1)
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    if variant == "decode path":
        use_decode_attention(m)
    elif variant == "fused":
        fuse_projections(m)
    return m.eval()


@pytest.mark.parametrize("variant", ["model", "decode path", "fused"])
@pytest.mark.parametrize("kind", ["plain", "slots"])
def test_cached_decoding_equals_the_uncached_forward(variant, kind):
    m = _model(variant)
    tokens = torch.randint(3, CFG.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    cache = KVCache(CFG, num_slots=3 if kind == "slots" else 2, max_len=40)
    rows = torch.tensor([2, 0])  # not in row order: the mapping must be honoured

    def view(kv_len):
        return cache if kind == "plain" else SlotView(cache, rows, kv_len)

    with torch.no_grad():
        full = _model("model")(tokens)  # [2, 24, V]: the plain model, no cache
        steps = [m(tokens[:, :10], torch.arange(10).expand(2, 10), cache=view(10))]
        for p in range(10, 24):
            steps.append(m(tokens[:, p:p + 1], torch.full((2, 1), p), cache=view(p + 1)))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_slot_rows_are_independent():
    m = _model("decode path")
    a, b = torch.randint(0, 97, (1, 6)), torch.randint(0, 97, (1, 4))
    cache = KVCache(CFG, num_slots=4, max_len=8)
    with torch.no_grad():
        out_a = m(a, torch.arange(6)[None], cache=SlotView(cache, torch.tensor([2])))
        out_b = m(b, torch.arange(4)[None], cache=SlotView(cache, torch.tensor([0])))
        assert torch.allclose(out_a, m(a), atol=1e-5) and torch.allclose(out_b, m(b), atol=1e-5)
        nxt = m(torch.tensor([[5], [7]]), torch.tensor([[6], [4]]), cache=SlotView(cache, torch.tensor([2, 0])))
        assert torch.allclose(nxt[0, -1], m(torch.cat([a, torch.tensor([[5]])], 1))[0, -1], atol=1e-5)
        assert torch.allclose(nxt[1, -1], m(torch.cat([b, torch.tensor([[7]])], 1))[0, -1], atol=1e-5)


def test_the_serving_paths_leave_the_original_model_unchanged():
    m = _model("model")
    before = copy.deepcopy(m.state_dict())
    served = copy.deepcopy(m)
    fuse_projections(served)
    assert type(m.layers[0].self_attn).__name__ == "Attention"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert served.state_dict().keys() == m.state_dict().keys()  # Hugging Face names kept
