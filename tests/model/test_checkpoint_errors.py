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
    assert "config.json: missing" in _load_error(good_dir)


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
    assert "header length 1000000000" in msg and "model.safetensors" in msg


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
