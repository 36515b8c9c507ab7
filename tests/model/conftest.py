"""Shared fixtures for the model tests: tiny random transformers Gemma models saved to disk."""

from __future__ import annotations

import pytest
import torch

# Tiny shapes covering the three attention layouts Gemma uses, plus a non-default RoPE base.
TINY_CONFIGS = {
    "mqa": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=1, head_dim=16),  # like 2B: one KV head
    "gqa": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, rope_theta=500.0),
    "mha_wide": dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=4, head_dim=16),  # like 7B: heads * head_dim (64) != hidden (48)
}


def make_hf_model(kind: str, vocab_size: int = 320, seed: int = 0):
    """A random transformers GemmaForCausalLM (fp32, eval) with non-zero norm offsets."""
    transformers = pytest.importorskip("transformers")
    kw = dict(TINY_CONFIGS[kind])
    theta = kw.pop("rope_theta", 10000.0)
    cfg = transformers.GemmaConfig(vocab_size=vocab_size, max_position_embeddings=256,
                                   hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
                                   rope_parameters={"rope_type": "default", "rope_theta": theta},
                                   pad_token_id=0, eos_token_id=1, bos_token_id=2, **kw)
    torch.manual_seed(seed)
    model = transformers.GemmaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2)  # HF inits norms to 0; exercise the (1 + w) scale
    return model


@pytest.fixture
def hf_model_dir(tmp_path):
    """Factory: save a tiny random HF Gemma with save_pretrained, return (model, directory)."""
    def make(kind: str = "gqa", **kw):
        model = make_hf_model(kind, **kw)
        out = tmp_path / f"hf-{kind}"
        model.save_pretrained(out)
        return model, out
    return make


@pytest.fixture(name="make_hf_model")
def make_hf_model_fixture():
    return make_hf_model


@pytest.fixture
def batch_tokens():
    """Factory: deterministic random token ids [batch, length] (a fixture, so no test imports conftest)."""
    def make(vocab_size: int, batch: int = 3, length: int = 19, seed: int = 1) -> torch.Tensor:
        return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    return make


@pytest.fixture(scope="session")
def debug_model_dir(tmp_path_factory):
    """A `codegemma init --preset debug` directory (config.json, model.safetensors, tokenizer.json)."""
    import warnings

    from codegemma.model.random_init import init_model_dir

    out = tmp_path_factory.mktemp("debug-model") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_model_dir("debug", out, seed=0)
    return out


@pytest.fixture
def model_copy(debug_model_dir, tmp_path):
    """A fresh copy of the debug model directory that a test may break."""
    import shutil

    out = tmp_path / "model"
    shutil.copytree(debug_model_dir, out)
    return out
