"""`codegemma export --gguf`: read the file back with gguf's GGUFReader and check it against the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codegemma.cli import main
from codegemma.model.checkpoint import CheckpointError, load_model
from codegemma.model.random_init import init_model_dir

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return init_model_dir("debug", tmp_path_factory.mktemp("gguf") / "debug", seed=5)


def _field(reader, key):
    return reader.fields[key].contents()


def _export(model_dir, out, dtype):
    assert main(["export", "--model", str(model_dir), "--gguf", str(out), "--dtype", dtype]) == 0
    return gguf.GGUFReader(out)


def test_f32_export_metadata_tensors_and_values(model_dir, tmp_path):
    reader = _export(model_dir, tmp_path / "m.gguf", "f32")
    model, config = load_model(model_dir, device="cpu")
    assert _field(reader, "general.architecture") == "gemma"
    assert _field(reader, "gemma.block_count") == config.num_hidden_layers
    assert _field(reader, "gemma.embedding_length") == config.hidden_size
    assert _field(reader, "gemma.feed_forward_length") == config.intermediate_size
    assert _field(reader, "gemma.attention.head_count") == config.num_attention_heads
    assert _field(reader, "gemma.attention.head_count_kv") == config.num_key_value_heads
    assert _field(reader, "gemma.attention.key_length") == config.head_dim
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    fim = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("fim_pre", "fim_suf", "fim_mid", "fim_sep", "eot")}
    assert fim == {"fim_pre": 67, "fim_suf": 69, "fim_mid": 68, "fim_sep": 70, "eot": 107}
    assert (_field(reader, "tokenizer.ggml.bos_token_id"), _field(reader, "tokenizer.ggml.eos_token_id")) == (2, 1)
    assert _field(reader, "tokenizer.ggml.add_space_prefix") is False

    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(tokens) == config.vocab_size and tokens[67] == "<|fim_prefix|>" and tokens[108] == "\n"
    assert all(tokens[i] == piece for piece, i in vocab.items())
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[1] == gguf.TokenType.CONTROL and types[3] == gguf.TokenType.UNKNOWN
    assert types[109] == gguf.TokenType.BYTE and types[-1] in (gguf.TokenType.NORMAL, gguf.TokenType.CONTROL)

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and len(tensors) == 2 + 9 * config.num_hidden_layers
    emb = tensors["token_embd.weight"]
    assert emb.shape.tolist() == [config.hidden_size, config.vocab_size]  # ggml order: fastest first
    state = model.state_dict()
    np.testing.assert_array_equal(np.asarray(emb.data), state["embed_tokens.weight"].numpy())
    q = tensors["blk.1.attn_q.weight"]
    assert q.shape.tolist() == [config.hidden_size, config.num_attention_heads * config.head_dim]
    np.testing.assert_array_equal(np.asarray(q.data), state["layers.1.self_attn.q_proj.weight"].numpy())
    norm = tensors["blk.0.ffn_norm.weight"]
    assert norm.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_allclose(np.asarray(norm.data), 1.0 + state["layers.0.post_attention_layernorm.weight"].numpy())


@pytest.mark.parametrize("dtype,qtype", [("f16", "F16"), ("bf16", "BF16")])
def test_16_bit_exports_keep_norms_f32(model_dir, tmp_path, dtype, qtype):
    reader = _export(model_dir, tmp_path / f"{dtype}.gguf", dtype)
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type.name == qtype
    assert tensors["output_norm.weight"].tensor_type.name == "F32"
    model, _ = load_model(model_dir, device="cpu")
    up = model.state_dict()["layers.0.mlp.up_proj.weight"]
    data = np.asarray(tensors["blk.0.ffn_up.weight"].data)
    if dtype == "f16":
        got = torch.from_numpy(data.astype(np.float32))
    else:  # raw bf16 bytes: widen to f32 by shifting into the high half
        got = torch.from_numpy(data.copy().view(np.uint16).astype(np.int32) << 16).view(torch.float32)
    torch.testing.assert_close(got.reshape(up.shape), up, atol=0, rtol=1e-2)


def test_modelfile_is_fims_for_the_chosen_mode(model_dir, tmp_path):
    from codegemma.fim.templates import modelfile

    for mode in ("psm", "spm"):
        out = tmp_path / mode
        code = main(["export", "--model", str(model_dir), "--gguf", str(out / "cg.gguf"), "--dtype", "f16",
                     "--fim-mode", mode])
        assert code == 0
        assert (out / "Modelfile").read_text() == modelfile("./cg.gguf", mode)
        assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_gpt2_style_tokenizer_is_refused_clearly(model_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    other = tmp_path / "gpt2ish"
    other.mkdir()
    for f in ("config.json", "model.safetensors"):
        (other / f).write_bytes((model_dir / f).read_bytes())
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.save(str(other / "tokenizer.json"))
    from codegemma.model.gguf_export import export_gguf

    with pytest.raises(CheckpointError, match="cannot be expressed as a GGUF 'llama'"):
        export_gguf(other, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_llama_cpp_runs_the_export_like_codegemma(model_dir, tmp_path):
    """The real consumer: llama.cpp (llama-cpp-python) tokenises like our tokenizer and computes
    the same logits. Skipped where llama-cpp-python is not installed."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from codegemma.tokenizer import Tokenizer

    out = tmp_path / "f32.gguf"
    _export(model_dir, out, "f32")
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    ours_tok = Tokenizer.load(model_dir)
    texts = ["def fibonacci(n):\n    a, b = 0, 1\n", "print(sorted(word_counts('the cat')))",
             "<|fim_prefix|>import os\n<|fim_suffix|>\n<|fim_middle|>", "  x  =   1\n\n\tdef  f():",
             "ünïcödé ✓ 漢字 😀 12345"]  # byte fallback, whitespace runs, split digits
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ours_tok.encode(text, add_bos=True), text
    model, _ = load_model(model_dir, device="cpu")
    ids = ours_tok.encode(texts[0], add_bos=True)
    llm.reset()
    llm.eval(ids)
    theirs = torch.tensor(np.asarray(llm.scores[:len(ids)]))
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]
    torch.testing.assert_close(theirs, ours, atol=1e-3, rtol=1e-3)
