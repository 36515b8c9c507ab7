"""`codegemma export --dtype q8_0|q4_0`: the tensor types read back, the values they hold, and
llama.cpp completing a FIM prompt from them as codegemma's own int8 / int4 paths do."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from codegemma.cli import main
from codegemma.model.checkpoint import load_model
from codegemma.model.gguf_export import gguf_tensor_name
from codegemma.model.random_init import init_model_dir

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return init_model_dir("debug", tmp_path_factory.mktemp("gguf-q") / "debug", seed=3)


def _export(model_dir, out, dtype):
    assert main(["export", "--model", str(model_dir), "--gguf", str(out), "--dtype", dtype]) == 0
    return gguf.GGUFReader(out)


def _weights_from(reader, model) -> dict[str, torch.Tensor]:
    """Our state-dict names -> the GGUF's values, dequantized (norms back to offsets from 1)."""
    names = {gguf_tensor_name(k): k for k in model.state_dict()}
    out = {}
    for t in reader.tensors:
        ours = names[t.name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(model.state_dict()[ours].shape)
        w = torch.from_numpy(np.array(w, dtype=np.float32))
        out[ours] = w - 1.0 if t.name.endswith("norm.weight") else w
    return out


@pytest.mark.parametrize("dtype,layer_type,embd_type,max_err", [("q8_0", Q.Q8_0, Q.Q8_0, 0.01),
                                                                 ("q4_0", Q.Q4_0, Q.Q8_0, 0.15)])
def test_quantized_exports_hold_the_weights_in_llama_cpp_types(model_dir, tmp_path, dtype, layer_type,
                                                               embd_type, max_err):
    reader = _export(model_dir, tmp_path / f"{dtype}.gguf", dtype)
    types = {t.name: t.tensor_type for t in reader.tensors}
    ftype = reader.fields["general.file_type"].contents()
    assert ftype == (gguf.LlamaFileType.MOSTLY_Q8_0 if dtype == "q8_0" else gguf.LlamaFileType.MOSTLY_Q4_0)
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == layer_type
    assert types["token_embd.weight"] == embd_type  # the tied output head keeps 8 bits (llama-quantize: q6_K)
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == Q.F32
    model, _ = load_model(model_dir, device="cpu")
    state = model.state_dict()
    for name, w in _weights_from(reader, model).items():  # each value within its block's step
        ref = state[name]
        assert (w - ref).abs().max() <= max_err * ref.abs().max() + 1e-6, name


def test_a_row_that_is_not_whole_blocks_falls_back_to_f16(model_dir, tmp_path):
    """As convert_hf_to_gguf.py does: a tensor whose rows are not whole 32-value blocks is f16."""
    from codegemma.model.checkpoint import save_model
    from codegemma.model.config import get_preset
    from codegemma.model.transformer import Gemma

    odd = get_preset("debug").replace(hidden_size=48, num_attention_heads=3, num_key_value_heads=1)
    save_model(Gemma(odd).init_weights(0), odd, tmp_path / "odd48", tokenizer_dir=model_dir)
    types = {t.name: t.tensor_type for t in _export(tmp_path / "odd48", tmp_path / "odd.gguf", "q4_0").tensors}
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == Q.F16  # rows of 48 inputs
    assert types["blk.0.ffn_down.weight"] == Q.Q4_0  # rows of 128 inputs


@pytest.fixture
def llama_cpp(monkeypatch):
    """llama-cpp-python, with llama.cpp's CPU "extra buffer types" (AMX / repacked weights) off:
    llama-cpp-python 0.3.36 built on an AMX Xeon crashes (SIGSEGV in llama_decode) on any quantized
    tensor with them on, our files or not (f16 runs); they are a speed path, not a format."""
    module = pytest.importorskip("llama_cpp")
    defaults = module.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = False
        return p

    monkeypatch.setattr(module.llama.llama_cpp, "llama_model_default_params", params)
    return module


def _greedy_llama(llama_cpp, path, ids, stops, n):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        if t in stops:
            break
        llm.eval([t])
    return out


def _greedy_ours(model, ids, stops, n):
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out]))[0, -1].argmax()))
            if out[-1] in stops:
                break
    return out[len(ids):]


def test_llama_cpp_completes_fim_like_our_int8_and_int4(llama_cpp, tmp_path):
    """On the built-in model: llama.cpp's Q8_0 completes the FIM prompt to the same text as our
    int8 engine (and as full precision). Q4_0 and our int4 are different quantizers (Q4_0: groups
    of 32 inputs, one scale, no offset; ours: groups of 128, scale and zero): where their greedy
    text differs, llama.cpp's Q4_0 text must be the one our own model computes from the Q4_0
    file's weights, so the difference is the quantizer, not the file or either runtime."""
    import codegemma
    from codegemma.fim.format import stop_token_ids
    from codegemma.models import resolve_model

    nano = resolve_model("nano")
    prefix, suffix = "def add(a, b):\n    return ", "\n\n\nprint(add(1, 2))\n"
    n = 16
    texts = {}
    for quantize in (None, "int8", "int4"):
        with codegemma.load(nano, device="cpu", quantize=quantize) as cg:
            texts[quantize] = cg.complete(prefix, suffix, max_new_tokens=n)
            ids, tok = cg.fim_prompt(prefix, suffix).ids, cg.tokenizer
    stops = set(stop_token_ids(tok))
    model, _ = load_model(nano, device="cpu")

    def text(token_ids):
        return tok.decode([t for t in token_ids if t not in stops])

    _export(nano, tmp_path / "q8_0.gguf", "q8_0")
    assert text(_greedy_llama(llama_cpp, tmp_path / "q8_0.gguf", ids, stops, n)) == texts["int8"] == texts[None]
    q4 = _export(nano, tmp_path / "q4_0.gguf", "q4_0")
    llama4 = text(_greedy_llama(llama_cpp, tmp_path / "q4_0.gguf", ids, stops, n))
    if llama4 != texts["int4"]:
        on_q4 = copy.deepcopy(model)
        on_q4.load_state_dict(_weights_from(q4, on_q4))
        assert text(_greedy_ours(on_q4, ids, stops, n)) == llama4
