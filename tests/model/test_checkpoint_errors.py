"""Every way a checkpoint directory can be broken ends in one CheckpointError naming the file."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from codegemma.model.checkpoint import CheckpointError, load_model


@pytest.fixture
def good_dir(hf_model_dir):
    return hf_model_dir("mqa")[1]


def _load_error(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, **kw, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg  # one line
    return msg


def test_missing_directory(tmp_path):
    msg = _load_error(tmp_path / "nope")
    assert "nope" in msg and "not found" in msg


def test_missing_config(good_dir):
    (good_dir / "config.json").unlink()
    msg = _load_error(good_dir)
    assert msg.startswith(f"{good_dir}: config.json: missing; a model directory holds config.json")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for callers that catch that
        load_model(good_dir, device="cpu")


def test_missing_weights(good_dir):
    (good_dir / "model.safetensors").unlink()
    msg = _load_error(good_dir)
    assert "no weights found" in msg and str(good_dir) in msg


def test_truncated_safetensors(good_dir):
    f = good_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    msg = _load_error(good_dir)
    assert "model.safetensors" in msg and "truncated" in msg


def test_file_shorter_than_header_length(good_dir):
    (good_dir / "model.safetensors").write_bytes(b"\x01\x02")
    assert "truncated" in _load_error(good_dir)


def test_header_length_beyond_file(good_dir):
    f = good_dir / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    msg = _load_error(good_dir)
    assert "header length is larger than the file (10 bytes)" in msg and "model.safetensors" in msg
    assert "1000000000" not in msg  # the length field is the file's first bytes: never echoed


def test_garbage_header(good_dir):
    f = good_dir / "model.safetensors"
    garbage = b"\xff\xfenot json at all"
    f.write_bytes(struct.pack("<Q", len(garbage)) + garbage + b"\0" * 64)
    assert "header is not valid JSON" in _load_error(good_dir)


def test_wrong_shape(good_dir):
    f = good_dir / "model.safetensors"
    state = load_file(f)
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(95, 48)
    save_file(state, str(f), metadata={"format": "pt"})
    msg = _load_error(good_dir)
    assert "'model.layers.1.mlp.up_proj.weight' has shape [95, 48], expected [96, 48]" in msg
    assert "model.safetensors" in msg


def test_missing_and_unexpected_tensors(good_dir):
    f = good_dir / "model.safetensors"
    state = load_file(f)
    del state["model.layers.0.self_attn.k_proj.weight"]
    state["model.layers.0.self_attn.rotary.inv_freq"] = torch.zeros(8)
    save_file(state, str(f), metadata={"format": "pt"})
    msg = _load_error(good_dir)
    assert "1 missing tensors, e.g. ['layers.0.self_attn.k_proj.weight']" in msg
    assert "1 unexpected tensors" in msg and "inv_freq" in msg


@pytest.mark.parametrize("model_type,arch", [("llama", "LlamaForCausalLM"), ("gemma2", "Gemma2ForCausalLM")])
def test_unsupported_architecture(good_dir, model_type, arch):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg.update(model_type=model_type, architectures=[arch])
    (good_dir / "config.json").write_text(json.dumps(cfg))
    msg = _load_error(good_dir)
    assert "config.json" in msg and "unsupported architecture" in msg and model_type in msg


def test_scaled_rope_is_refused(good_dir):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (good_dir / "config.json").write_text(json.dumps(cfg))
    assert "RoPE scaling 'linear'" in _load_error(good_dir)


def test_config_not_json(good_dir):
    (good_dir / "config.json").write_text("{oops")
    assert "config.json: not valid JSON" in _load_error(good_dir)


def test_index_pointing_to_missing_shard(good_dir):
    state = load_file(good_dir / "model.safetensors")
    (good_dir / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    save_file({n: state[n] for n in names[:half]}, str(good_dir / "model-00001-of-00002.safetensors"))
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names[:half]}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n in names[half:]})
    (good_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    msg = _load_error(good_dir)
    assert "model.safetensors.index.json" in msg and "model-00002-of-00002.safetensors" in msg
    assert "missing" in msg


def test_pickle_only_needs_explicit_opt_in(good_dir, batch_tokens):
    reference, config = load_model(good_dir, device="cpu")
    state = load_file(good_dir / "model.safetensors")
    (good_dir / "model.safetensors").unlink()
    torch.save(state, good_dir / "pytorch_model.bin")
    msg = _load_error(good_dir)
    assert "pytorch_model.bin" in msg and "allow_pickle=True" in msg
    model, _ = load_model(good_dir, allow_pickle=True, device="cpu")
    tokens = batch_tokens(config.vocab_size)
    with torch.no_grad():
        assert torch.equal(model(tokens), reference(tokens))


def test_pickle_with_code_is_refused_even_when_allowed(good_dir):
    import os
    (good_dir / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, good_dir / "pytorch_model.bin")
    msg = _load_error(good_dir, allow_pickle=True)
    assert "cannot load PyTorch weights" in msg


# ---- config.json: every value checked for its type and range, in one place -------------------

def _set_config(directory, **changes):
    cfg = json.loads((directory / "config.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (directory / "config.json").write_text(json.dumps(cfg))


_DROP = object()

CONFIG_CORRUPTIONS = {
    "eos_empty_list": (dict(eos_token_id=[]), "eos_token_id must be a token id or a non-empty list"),
    "eos_string": (dict(eos_token_id="1"), "eos_token_id must be a token id or a non-empty list"),
    "eos_list_of_strings": (dict(eos_token_id=["1"]), "eos_token_id must be a token id"),
    "eos_outside_vocab": (dict(eos_token_id=10**6), "eos_token_id 1000000 is outside the vocabulary"),
    "bos_negative": (dict(bos_token_id=-1), "bos_token_id must be >= 0, got -1"),
    "layers_fraction": (dict(num_hidden_layers=2.5), "num_hidden_layers must be an integer, got 2.5"),
    "layers_bool": (dict(num_hidden_layers=True), "num_hidden_layers must be an integer, got True"),
    "hidden_bool": (dict(hidden_size=True), "hidden_size must be an integer, got True"),
    "heads_string": (dict(num_attention_heads="4"), "num_attention_heads must be an integer, got '4'"),
    "layers_huge": (dict(num_hidden_layers=10**9), "num_hidden_layers must be at most"),
    "eps_string": (dict(rms_norm_eps="1e-6"), "rms_norm_eps must be a number, got '1e-6'"),
    "eps_bool": (dict(rms_norm_eps=False), "rms_norm_eps must be a number, got False"),
    "eps_zero": (dict(rms_norm_eps=0), "rms_norm_eps must be positive, got 0"),
    "theta_string": (dict(rope_theta="10000"), "rope_theta must be a number, got '10000'"),
    "theta_negative": (dict(rope_theta=-1.0), "rope_theta must be positive, got -1.0"),
    "intermediate_negative": (dict(intermediate_size=-5), "intermediate_size must be positive, got -5"),
    "heads_zero": (dict(num_attention_heads=0), "num_attention_heads must be positive, got 0"),
    "kv_heads_zero": (dict(num_key_value_heads=0), "num_key_value_heads must be positive, got 0"),
    "head_dim_zero": (dict(head_dim=0), "head_dim must be positive, got 0"),
    "head_dim_odd": (dict(head_dim=15), "head_dim must be even"),
    "kv_not_dividing": (dict(num_key_value_heads=3), "must be a multiple of num_key_value_heads"),
    "head_dim_derived_uneven": (dict(head_dim=_DROP, num_attention_heads=5, num_key_value_heads=5),
                                "hidden_size 64 is not divisible by num_attention_heads 5"),
    "vocab_null": (dict(vocab_size=None), "vocab_size must be an integer, got None"),
    "max_positions_zero": (dict(max_position_embeddings=0), "max_position_embeddings must be positive"),
    "dtype_int": (dict(torch_dtype="int8"), "torch_dtype must be one of"),
    "dtype_not_string": (dict(torch_dtype=16), "torch_dtype must be one of"),
    "architectures_string": (dict(architectures="GemmaForCausalLM"), "architectures must be a list"),
    "required_missing": (dict(hidden_size=_DROP), "missing required keys ['hidden_size']"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CORRUPTIONS))
def test_corrupt_config_values_are_one_line(model_copy, case):
    changes, expected = CONFIG_CORRUPTIONS[case]
    _set_config(model_copy, **changes)
    msg = _load_error(model_copy)
    assert msg.startswith(f"{model_copy / 'config.json'}: ") and expected in msg, msg


def test_config_infinity_is_refused(model_copy):
    text = (model_copy / "config.json").read_text().replace('"rope_theta": 10000.0', '"rope_theta": Infinity')
    assert "Infinity" in text
    (model_copy / "config.json").write_text(text)
    assert "rope_theta must be a finite number, got inf" in _load_error(model_copy)


@pytest.mark.parametrize("text,expected", [
    ("[1, 2]", "config.json: expected a JSON object"),
    ('"gemma"', "config.json: expected a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "config.json: JSON nested too deeply"),
    ("{oops", "config.json: not valid JSON"),
], ids=["array", "string", "nested", "broken"])
def test_config_that_is_not_an_object(model_copy, text, expected):
    (model_copy / "config.json").write_text(text)
    msg = _load_error(model_copy)
    assert expected in msg and str(model_copy) in msg


def test_config_that_is_a_directory(model_copy):
    (model_copy / "config.json").unlink()
    (model_copy / "config.json").mkdir()
    assert f"{model_copy / 'config.json'}: is a directory, not a file" in _load_error(model_copy)


def test_config_not_utf8_echoes_nothing(model_copy):
    (model_copy / "config.json").write_bytes(b'{"model_type": "\xffSECRET"}')
    msg = _load_error(model_copy)
    assert "not valid UTF-8" in msg and "SECRET" not in msg and "xff" not in msg


def test_valid_variants_still_load(model_copy):
    # eos as a list (the first id is the end of text), nulls for defaulted ids, integral rope_theta,
    # head_dim left out (derived from hidden_size / heads): all as transformers writes them.
    _set_config(model_copy, eos_token_id=[1, 107], pad_token_id=None, rope_theta=10000,
                head_dim=_DROP, torch_dtype=_DROP)
    _, config = load_model(model_copy, device="cpu")
    assert (config.eos_token_id, config.pad_token_id, config.rope_theta, config.head_dim) == (1, 0, 10000.0, 16)
