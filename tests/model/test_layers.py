import math

import pytest
import torch

from codegemma.model.config import PRESETS, GemmaConfig, get_preset
from codegemma.model.layers import RMSNorm, apply_rope, rope_cos_sin
from codegemma.model.transformer import Gemma

CFG = GemmaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, torch_dtype="float32")


def model(cfg=CFG, seed=0):
    return Gemma(cfg).init_weights(seed).eval()


def test_rmsnorm_scales_by_one_plus_weight_in_float32():
    norm = RMSNorm(4)
    norm.weight.data = torch.tensor([0.0, 1.0, -1.0, 0.5])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    rms = math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6)
    assert torch.allclose(norm(x), x / rms * torch.tensor([1.0, 2.0, 0.0, 1.5]))
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_rope_rotates_half_pairs_and_keeps_norms():
    cos, sin = rope_cos_sin(torch.tensor([[0, 3]]), 8, 10000.0, torch.float32)
    x = torch.randn(1, 2, 2, 8)
    y = apply_rope(x, cos, sin)
    assert torch.allclose(y[:, :, 0], x[:, :, 0])  # position 0 is the identity
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    # element 0 pairs with element 4 (rotate-half), rotated by angle 3 * theta^0 = 3 rad
    a, b = x[0, 0, 1, 0], x[0, 0, 1, 4]
    assert torch.allclose(y[0, 0, 1, 0], a * math.cos(3) - b * math.sin(3), atol=1e-5)


def test_embedding_normaliser_is_rounded_to_the_model_dtype():
    m = Gemma(CFG.replace(hidden_size=2048)).to(torch.bfloat16)
    m.embed_tokens.weight.data.fill_(1.0)
    captured = {}
    m.layers[0].register_forward_pre_hook(lambda mod, args: captured.update(x=args[0]))
    m(torch.tensor([[1]]))
    assert captured["x"].float().unique().item() == 45.25  # sqrt(2048)=45.2548 rounded to bf16


def test_attention_mask_separates_packed_documents():
    m = model()
    d1, d2 = torch.randint(0, 97, (1, 5)), torch.randint(0, 97, (1, 7))
    packed = torch.cat([d1, d2], 1)
    seg = torch.tensor([0] * 5 + [1] * 7)
    mask = (seg[:, None] == seg[None, :]) & torch.ones(12, 12, dtype=torch.bool).tril()
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None]
    out = m(packed, positions, attn_mask=mask[None, None])
    assert torch.allclose(out[:, :5], m(d1), atol=1e-5)
    assert torch.allclose(out[:, 5:], m(d2), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes_run(dtype):
    m = model().to(dtype)
    out = m(torch.randint(0, 97, (2, 5)))
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_presets_and_counts_without_allocating():
    assert PRESETS["2b"].num_parameters() == 2_506_172_416
    assert PRESETS["7b"].num_parameters() == 8_537_680_896
    with torch.device("meta"):
        m = Gemma(get_preset("2b"))
    assert sum(p.numel() for p in m.parameters()) == 2_506_172_416
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("3b")
    with pytest.raises(ValueError, match="multiple of"):
        GemmaConfig(num_attention_heads=8, num_key_value_heads=3)


def test_hf_config_round_trip_and_refusal():
    for cfg in PRESETS.values():
        assert GemmaConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    with pytest.raises(ValueError, match="unsupported architecture"):
        GemmaConfig.from_hf_dict({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]})
