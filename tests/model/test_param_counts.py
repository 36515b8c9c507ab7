"""Parameter counts of the real presets, computed without allocating any weights."""

from __future__ import annotations

import pytest
import torch

from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma

EXPECTED = {"2b": 2_506_172_416, "7b": 8_537_680_896}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_config_count(preset):
    assert get_preset(preset).num_parameters() == EXPECTED[preset]


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_meta_module_count_and_shapes(preset):
    config = get_preset(preset)
    with torch.device("meta"):
        model = Gemma(config)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[preset]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    h, nh, nkv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    assert shapes["embed_tokens.weight"] == (256000, h)
    assert shapes["layers.0.self_attn.q_proj.weight"] == (nh * 256, h)
    assert shapes["layers.0.self_attn.k_proj.weight"] == (nkv * 256, h)
    assert shapes["layers.0.self_attn.o_proj.weight"] == (h, nh * 256)
    assert shapes[f"layers.{config.num_hidden_layers - 1}.mlp.down_proj.weight"] == (h, config.intermediate_size)
    assert "lm_head.weight" not in shapes


def test_bf16_checkpoint_bytes_match_the_reference():
    # gemma-architecture.md §2: total_size of the official bf16 index files.
    assert 2 * get_preset("2b").num_parameters() == 5_012_344_832
    assert 2 * get_preset("7b").num_parameters() == 17_075_361_792
