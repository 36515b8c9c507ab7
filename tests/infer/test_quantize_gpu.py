"""int8 / int4 on CUDA: the Triton kernel against a dequantized reference, and the engine's CUDA-graph
and torch.compile decode paths against eager decoding of the same quantized model."""

from __future__ import annotations

import copy

import pytest
import torch

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.quantize import Int4Linear, Int8Linear, quantize_int4, quantize_int8, quantize_model
from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("m", [1, 3, 8, 16, 40, 300])
@pytest.mark.parametrize("n,k,group", [(96, 256, 32), (200, 512, 128), (64, 4096, 128), (24, 1024, 256)])
def test_triton_kernel_matches_the_dequantized_product(m, n, k, group):
    from codegemma.infer.quant_triton import pick_config, wq_matmul

    gen = torch.Generator(device="cuda").manual_seed(m * n + k)
    w = torch.randn(n, k, device="cuda", generator=gen, dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", generator=gen, dtype=torch.bfloat16)
    q8, s8 = quantize_int8(w)
    want8 = x.float() @ (q8.float() * s8.float()[:, None]).T
    q4, sz = quantize_int4(w, group, torch.bfloat16)
    n_, g = n, k // group
    deq4 = ((q4.float().reshape(n_, g, group) - 8) * sz[..., 0].T.float()[..., None]
            + sz[..., 1].T.float()[..., None]).reshape(n, k)
    want4 = x.float() @ deq4.T
    packed = (q4[:, ::2] | q4[:, 1::2] << 4).to(torch.uint8)
    configs = [None]
    if m <= 8:  # the GEMV path with a split reduction, whatever pick_config would choose
        configs.append(dict(pick_config(m, n, k, 4, group), SPLIT_K=2, BLOCK_K=32))
    for cfg in configs:
        got8 = wq_matmul(x, q8, s8, n, bits=8, config=cfg)
        got4 = wq_matmul(x, packed, sz, n, bits=4, group=group, config=cfg)
        assert got8.dtype == torch.bfloat16 and got8.shape == (m, n)
        scale = want8.abs().max()
        assert (got8.float() - want8).abs().max() < 0.02 * scale, cfg
        assert (got4.float() - want4).abs().max() < 0.02 * want4.abs().max(), cfg


@pytest.mark.parametrize("n,k,group", [(64, 256, 32), (200, 512, 128), (48, 3072, 64)])
def test_tinygemm_weights_dequantize_exactly(n, k, group):
    from codegemma.infer.quantize import dequantize_tinygemm

    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    q, sz = quantize_int4(w, group, torch.bfloat16)
    for tiles in (8, 4, 2):
        if k % (tiles * 16):
            continue
        packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
        scale, zero = sz[..., 0].t().float(), sz[..., 1].t().float()
        want = ((q.float().reshape(n, -1, group) - 8) * scale[..., None] + zero[..., None]).reshape(n, k)
        assert torch.equal(dequantize_tinygemm(packed, sz, group, torch.float32), want), tiles
        x = torch.randn(5, k, device="cuda", dtype=torch.bfloat16)  # and tinygemm agrees with it
        torch.testing.assert_close(torch._weight_int4pack_mm(x, packed, group, sz).float(), x.float() @ want.T,
                                   atol=0.5, rtol=2e-2)


def _model(seed: int = 0):
    cfg = get_preset("debug")
    model = Gemma(cfg).init_weights(seed)
    with torch.no_grad():  # larger weights so greedy output varies (as tests/infer/test_gpu.py)
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if "embed" in name else 0.3))
        model.embed_tokens.weight[:108] = 0.0
    return model.cuda()  # fp32 activations: compile's fused elementwise ops round as eager does


def _tokens(model, tok, mode, prompts, params, max_slots=4):
    with Engine(model, tok, max_slots=max_slots, max_seq_len=512, decode=mode, speculate=0) as engine:
        return [engine.submit(p, sp).result(timeout=600).token_ids for p, sp in zip(prompts, params)]


@pytest.mark.parametrize("fmt,kernel,mode", [("int8", "triton", "graphs"), ("int4", "triton", "graphs"),
                                              ("int4", "tinygemm", "graphs"), ("int4", "tinygemm", "compile")])
def test_graph_and_compiled_decode_of_quantized_weights_match_eager(small_tokenizer_dir, monkeypatch, fmt,
                                                                    kernel, mode):
    import codegemma.infer.quantize as quantize
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    import codegemma.infer.quant_triton as quant_triton

    monkeypatch.setattr(quantize, "INT8_CUDA_KERNEL" if fmt == "int8" else "INT4_CUDA_KERNEL", kernel)
    # Graph-captured prefill pads a prompt to its chunk bucket (4 tokens run as 32 rows), and the Triton
    # kernel takes its tensor-core tiles past GEMV_MAX_ROWS: eager (4 rows, GEMV) and graphs (32 rows, tiles)
    # then round differently and greedy output parts after a few tokens (seen on the H200, 2026-12-03).
    # With one kernel family for every row count the two must agree exactly: that is what is tested.
    monkeypatch.setattr(quant_triton, "GEMV_MAX_ROWS", quant_triton.DOT_MAX_ROWS)
    base = quantize_model(_model(), fmt, 32)
    assert any(isinstance(m, Int4Linear if fmt == "int4" else Int8Linear) for m in base.modules())
    prompts = [[2, 300, 301, 302], [2] + list(range(200, 300)), [2, 400]]  # the 2nd prefills 101 rows
    params = [SamplingParams(max_new_tokens=n) for n in (30, 20, 40)]
    want = _tokens(copy.deepcopy(base), tok, "eager", prompts, params)  # the same kernels, launched one by one
    slots = 1 if mode == "compile" else 4  # one batch bucket: one compilation
    got = _tokens(base, tok, mode, prompts, params, max_slots=slots)
    assert got == want
    assert len(set(map(tuple, want))) == len(want)
