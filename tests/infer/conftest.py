"""Fixtures for the inference tests: a tiny random model directory written by transformers
(GemmaForCausalLM.save_pretrained) with the project's small BPE tokenizer, and engines over it."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SAMPLE_CODE

VOCAB = 512


def _hf_config():
    transformers = pytest.importorskip("transformers")
    return transformers.GemmaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A random fp32 model whose outputs vary from token to token (weights larger than HF's init)
    and that never picks a control token greedily (their embedding rows are zero; tied head), so
    greedy runs are 32 tokens long and comparable token for token."""
    transformers = pytest.importorskip("transformers")
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer

    torch.manual_seed(0)
    hf = transformers.GemmaForCausalLM(_hf_config()).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            # A small embedding next to large layers: otherwise the tied head just repeats the input.
            std = 0.05 if "embed" in name else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        hf.model.embed_tokens.weight[:108] = 0.0
    out = tmp_path_factory.mktemp("model")
    hf.save_pretrained(out)
    save_tokenizer_files(train_bpe_tokenizer([SAMPLE_CODE] * 3, VOCAB), out)
    return out


@pytest.fixture(scope="session")
def loaded(model_dir):
    from codegemma.model.checkpoint import load_model
    from codegemma.tokenizer import Tokenizer

    model, config = load_model(model_dir, device="cpu", dtype=torch.float32)
    return model, Tokenizer.load(model_dir)


PROMPT_TEXTS = ["def add(a, b):\n", "import os\nimport sys\n\n\nclass Greeter:\n    def __init__(self, name):",
                "x", "for i in range(10):\n    print(add(i, i * 2))\n"]


@pytest.fixture(scope="session")
def P(loaded):
    """PROMPT_TEXTS as the ids the engine runs (<bos> first): the engine takes ids only."""
    _, tok = loaded
    return [tok.encode(t, add_bos=True) for t in PROMPT_TEXTS]


@pytest.fixture
def make_engine(loaded):
    from codegemma.infer.engine import Engine

    engines = []

    def make(**kw):
        model, tok = loaded
        kw.setdefault("max_slots", 4)
        kw.setdefault("max_seq_len", 512)
        engines.append(Engine(model, tok, **kw))
        return engines[-1]

    yield make
    for e in engines:
        e.close()
