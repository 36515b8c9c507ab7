"""bf16 on CUDA: the checkpoint's dtype is the default there, and logits track transformers'."""

from __future__ import annotations

import pytest
import torch

from codegemma.model.checkpoint import load_model

pytestmark = pytest.mark.gpu
transformers = pytest.importorskip("transformers")


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.mark.parametrize("kind", ["mqa", "mha_wide"])
def test_bf16_logits_track_transformers(cuda, make_hf_model, batch_tokens, tmp_path, kind):
    hf = make_hf_model(kind).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)  # config.json records dtype bfloat16
    hf = hf.to(cuda)
    ours, config = load_model(tmp_path, device=cuda)  # dtype=None -> the checkpoint's bf16 on CUDA
    assert next(ours.parameters()).dtype == torch.bfloat16 and config.torch_dtype == "bfloat16"
    tokens = batch_tokens(config.vocab_size, batch=4, length=64).to(cuda)
    with torch.no_grad():
        a, b = ours(tokens).float(), hf(tokens).logits.float()
    # Same math in bf16; kernels may round differently, so compare against the logit scale.
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= 0.02 * scale
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() > 0.95
    # And against an fp32 reference of the same weights, bf16 stays close.
    ref, _ = load_model(tmp_path, device=cuda, dtype=torch.float32)
    with torch.no_grad():
        c = ref(tokens)
    assert (a - c).abs().max().item() <= 0.05 * c.abs().max().item()
