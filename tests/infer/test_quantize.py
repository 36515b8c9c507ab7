"""Weight-only int8 / int4 (codegemma.infer.quantize) on the CPU: the numbers, the model, the engine."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.fuse import fuse_linears, fuse_projections, is_fused
from codegemma.infer.quantize import (Int4Linear, Int8Embedding, Int8Linear, check_mode, quantize_int4,
                                      quantize_int8, quantize_model, quantizer, weight_bytes)
from codegemma.model.checkpoint import load_model

PROMPTS = ["def add(a, b):\n", "import os\nimport sys\n\n\nclass Greeter:\n    def __init__(self, name):",
           "for i in range(10):\n    print(add(i, i * 2))\n"]


def _dequant_int4(q, sz, group):
    n, k = q.shape
    scale, zero = sz[..., 0].T, sz[..., 1].T  # [N, K / group]
    return ((q.float().reshape(n, -1, group) - 8) * scale.float()[..., None] + zero.float()[..., None]).reshape(n, k)


def test_int8_is_the_nearest_multiple_of_a_per_row_scale():
    w = torch.randn(48, 96) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different sizes
    w[5] = 0.0
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (48,) and q.abs().max() <= 127
    torch.testing.assert_close(s[:4], w[:4].abs().amax(1) / 127)
    err = (q.float() * s[:, None] - w).abs()
    assert (err <= s[:, None] / 2 + 1e-12).all()  # round to nearest
    assert (q[5] == 0).all() and torch.isfinite(s).all()  # an all-zero row stays zero


def test_int4_groups_cover_each_groups_range():
    w = torch.randn(32, 256)
    q, sz = quantize_int4(w, 64, torch.float32)
    assert q.min() >= 0 and q.max() <= 15 and sz.shape == (4, 32, 2)
    deq = _dequant_int4(q, sz, 64)
    scale = sz[..., 0].T.repeat_interleave(64, dim=1)
    assert ((deq - w).abs() <= scale / 2 + 1e-6).all()
    # both ends of each group's range are representable
    g = w.reshape(32, 4, 64)
    torch.testing.assert_close(deq.reshape(32, 4, 64).amin(-1), g.amin(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(deq.reshape(32, 4, 64).amax(-1), g.amax(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7, 100])  # decode-sized inputs and a prefill
def test_quantized_linears_compute_x_times_the_dequantized_weight(dtype, rows):
    w = (torch.randn(64, 128) * 0.05).to(dtype)
    x = torch.randn(rows, 128).to(dtype)
    q, s = quantize_int8(w)
    lin8, lin4 = Int8Linear(q, s), Int4Linear.from_float(w, 32)
    want8 = x.float() @ (q.float() * s.float()[:, None]).T
    q4, sz = quantize_int4(w, 32, torch.bfloat16)  # the CPU int4 kernel keeps bf16 scales
    want4 = x.float() @ _dequant_int4(q4, sz, 32).T
    for lin, want in ((lin8, want8), (lin4, want4)):
        got = lin(x.reshape(1, rows, 128))
        assert got.shape == (1, rows, 64) and got.dtype == dtype
        # the CPU kernels take bf16 activations: agreement to bf16 precision
        torch.testing.assert_close(got[0].float(), want, atol=0.01 * want.abs().max().item(), rtol=0)
    # and both stay close to the full-precision product (weights of ~0.05, int4 steps of ~0.015)
    exact = x.float() @ w.float().T
    assert (lin8(x).float() - exact).abs().max() < 0.05 * exact.abs().max()
    assert (lin4(x).float() - exact).abs().max() < 0.15 * exact.abs().max()


def test_fused_quantized_linears_equal_the_parts_and_share_their_storage():
    ws = [torch.randn(n, 128) for n in (64, 128, 64)]
    for make in (Int8Linear.from_float, lambda w: Int4Linear.from_float(w, 64)):
        parts = [make(w) for w in ws]
        x = torch.randn(3, 128)
        want = torch.cat([p(x) for p in parts], dim=-1)
        fused = fuse_linears(parts)
        assert type(fused) is type(parts[0]) and fused.state_dict() == {}  # non-persistent: HF names only
        torch.testing.assert_close(fused(x), want)
        torch.testing.assert_close(torch.cat([p(x) for p in parts], dim=-1), want)  # the views still work
        assert parts[1].weight.untyped_storage().data_ptr() == fused.weight.untyped_storage().data_ptr()
    # the CPU int4 packing interleaves 64 output rows: a part of 48 rows before another cannot be joined
    assert fuse_linears([Int4Linear.from_float(torch.randn(48, 64), 32),
                         Int4Linear.from_float(torch.randn(64, 64), 32)]) is None
    assert fuse_linears([Int8Linear.from_float(torch.randn(16, 64)), torch.nn.Linear(64, 16, bias=False)]) is None


@pytest.fixture(scope="module")
def model_tok(model_dir):
    from codegemma.tokenizer import Tokenizer

    model, _ = load_model(model_dir, device="cpu", dtype=torch.float32)
    return model, Tokenizer.load(model_dir)


@pytest.mark.parametrize("mode,group", [("int8", 128), ("int4", 32)])
def test_a_quantized_model_stays_close_to_full_precision(model_tok, mode, group):
    model, tok = model_tok
    q = quantize_model(copy.deepcopy(model), mode, group)
    kinds = {type(m) for m in q.modules()}
    assert (Int4Linear if mode == "int4" else Int8Linear) in kinds and torch.nn.Linear not in kinds
    assert isinstance(q.embed_tokens, Int8Embedding) and isinstance(q.lm_head, Int8Linear)
    assert "lm_head.weight" not in q.state_dict()  # the tied head is stored once
    assert weight_bytes(q) < weight_bytes(model) / (3.5 if mode == "int8" else 4.5)
    ids = torch.tensor([tok.encode(PROMPTS[1], add_bos=True)])
    with torch.no_grad():
        ref, got = model(ids)[0].log_softmax(-1), q(ids)[0].log_softmax(-1)
    kl = F.kl_div(got, ref, log_target=True, reduction="none").sum(-1).mean()
    # This random model's next-token distributions are nearly flat (top-1 ties are common), so the
    # divergence is the measure here; the built-in model's top-1 agreement is tested below.
    assert kl < (0.002 if mode == "int8" else 0.03), kl
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(q, mode)


@pytest.fixture(scope="module")
def nano():
    from codegemma.models import resolve_model
    from codegemma.tokenizer import Tokenizer

    path = resolve_model("nano")
    return load_model(path, device="cpu")[0], Tokenizer.load(path)


@pytest.mark.parametrize("mode,group,max_kl,min_top1", [("int8", 128, 0.01, 0.95), ("int4", 128, 0.3, 0.65),
                                                        ("int4", 32, 0.2, 0.75)])
def test_the_builtin_model_quantized_predicts_like_full_precision(nano, mode, group, max_kl, min_top1):
    """codegemma-nano on real code (this repository's engine.py): next-token agreement with fp32."""
    from pathlib import Path

    import codegemma.infer.engine as engine_py

    model, tok = nano
    ids = torch.tensor([tok.encode(Path(engine_py.__file__).read_text()[:3000], add_bos=True)[:512]])
    q = quantize_model(copy.deepcopy(model), mode, group)
    with torch.no_grad():
        ref, got = model(ids)[0].log_softmax(-1), q(ids)[0].log_softmax(-1)
    kl = F.kl_div(got, ref, log_target=True, reduction="none").sum(-1).mean()
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean()
    assert kl < max_kl and top1 > min_top1, (kl, top1)


def test_int4_falls_back_to_int8_for_shapes_the_kernel_cannot_take(model_tok):
    model, _ = model_tok  # hidden 64: not a multiple of the default group size 128
    with pytest.warns(UserWarning, match="use int8"):
        q = quantize_model(copy.deepcopy(model), "int4")
    layer = q.layers[0]
    assert isinstance(layer.self_attn.q_proj, Int8Linear) and isinstance(layer.mlp.gate_proj, Int8Linear)
    assert isinstance(layer.mlp.down_proj, Int4Linear)  # in_features 128: int4 as asked


def test_bad_modes_and_group_sizes_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown quantization 'int3'; choose int8 or int4"):
        check_mode("int3")
    with pytest.raises(ValueError, match="group size 100 .* 32, 64, 128, 256"):
        check_mode("int4", 100)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_engine_greedy_with_quantized_weights_matches_a_plain_forward_loop(model_tok, mode):
    """Fused or not, speculating or not, batched or alone: the engine's tokens are the quantized
    model's own greedy tokens (recomputed here without a cache)."""
    model, tok = model_tok
    q = quantize_model(copy.deepcopy(model), mode, 32)
    n = 12
    prompts = [tok.encode(p, add_bos=True) for p in PROMPTS]
    want = []
    for prompt in prompts:
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(n):
                ids.append(int(q(torch.tensor([ids]))[0, -1].argmax()))
        want.append(ids[-n:])
    params = SamplingParams(max_new_tokens=n)
    with Engine(q, tok, max_slots=4, max_seq_len=256, speculate=0) as e:
        assert [c.token_ids for c in e.generate(prompts, params)] == want
    fused = copy.deepcopy(q)
    with Engine(fused, tok, max_slots=4, max_seq_len=256, fuse=True) as e:  # speculation on
        assert is_fused(fused)
        got = [e.submit(p, params).result().token_ids for p in prompts * 2]  # second round drafts
        assert e.stats()["spec_steps"] > 0
    assert got == want * 2


def test_streaming_hook_quantizes_each_weight_as_it_is_loaded(model_dir, model_tok):
    model, _ = model_tok
    streamed, _ = load_model(model_dir, device="cpu", dtype=torch.float32, prepare=quantizer("int4", 32))
    after = quantize_model(copy.deepcopy(model), "int4", 32)
    a, b = streamed.state_dict(), after.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert type(streamed).__name__ == "GemmaQuantizedHead"


def test_fusing_then_quantizing_is_refused(model_tok):
    model, _ = model_tok
    fused = copy.deepcopy(model)
    fuse_projections(fused)
    with pytest.raises(ValueError, match="before fusing"):
        quantize_model(fused, "int8")


def test_cli_quantize_flag_gives_the_api_s_completion(tmp_path):
    """`codegemma complete --quantize int8` (a real subprocess) prints what codegemma.load(quantize=
    "int8").complete gives; bad values are refused by the argument parser in one line."""
    import os
    import subprocess
    import sys

    import codegemma

    prefix, suffix = "def add(a, b):\n    return ", "\n\n\nprint(add(1, 2))\n"
    env = {**os.environ, "PYTHONPATH": str(Path(codegemma.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-m", "codegemma", "complete", "--quantize", "int8", "--prefix", prefix,
                          "--suffix", suffix, "--max-new-tokens", "12"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    with codegemma.load(device="cpu", quantize="int8") as cg:
        assert isinstance(cg.model.layers[0].mlp.down_proj, Int8Linear)
        assert run.stdout == cg.complete(prefix, suffix, max_new_tokens=12)
    for bad in (["--quantize", "int3"], ["--quantize", "int4", "--group-size", "100"]):
        run = subprocess.run([sys.executable, "-m", "codegemma", "generate", "--prompt", "x", *bad],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 2 and "invalid choice" in run.stderr and "Traceback" not in run.stderr


def test_api_refuses_a_bad_quantization_before_loading(tmp_path):
    import codegemma

    with pytest.raises(ValueError, match="unknown quantization 'fp8'"):
        codegemma.load(tmp_path / "missing", quantize="fp8")  # the mode is checked before the path


def test_serve_backend_loads_quantized_weights():
    from codegemma.models import resolve_model
    from codegemma.serve.app import load_backend

    backend = load_backend(str(resolve_model("nano")), device="cpu", max_slots=1, quantize="int4", group_size=64)
    try:
        layer = backend.engine.model.layers[0]
        assert isinstance(layer.mlp.down_proj, Int4Linear) and layer.mlp.down_proj.group_size == 64
    finally:
        backend.engine.close()


def test_int4_weights_refuse_to_move_to_another_device_and_int8_moves(model_tok):
    model, _ = model_tok
    q = quantize_model(copy.deepcopy(model), "int4", 32)
    with pytest.raises(ValueError, match="packed for cpu; quantize the model on the device"):
        q.to("meta")
    q.to(torch.float32)  # no move: allowed
    assert isinstance(quantize_model(copy.deepcopy(model), "int8").to("meta").layers[0].mlp.up_proj, Int8Linear)
