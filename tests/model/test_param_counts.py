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


def test_a_saved_bf16_index_records_two_bytes_per_parameter(tmp_path):
    """gemma-architecture.md §2: an official bf16 index's total_size is 2 x params (5,012,344,832 for
    2B); ours must say the same of what it wrote, whatever the sharding."""
    import json

    from safetensors import safe_open

    from codegemma.model.checkpoint import save_model

    config = get_preset("debug")
    model = Gemma(config).init_weights(0)
    out = save_model(model, config, tmp_path / "m", dtype="bfloat16", max_shard_bytes=40_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    written = 0
    for name in shards:
        with safe_open(str(out / name), "pt") as f:
            written += sum(f.get_tensor(k).numel() * 2 for k in f.keys())
    assert index["metadata"]["total_size"] == written == 2 * config.num_parameters()
