"""Hostile checkpoint files: corrupt safetensors headers, index files that point outside the model
directory, non-finite weights. Each ends in one CheckpointError naming the file, echoing none of
its contents; nothing is read outside the model directory."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from codegemma.model.checkpoint import CheckpointError, load_model

SECRET = "hunter2-do-not-print"


def _load_error(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu", **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_raw(path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def _rewrite_header(path, header: dict) -> None:
    _, data = _header(path)
    _write_raw(path, json.dumps(header).encode(), data)


# ---- safetensors files ----------------------------------------------------------------------

def test_integer_tensor_where_a_float_is_expected(model_copy):
    f = model_copy / "model.safetensors"
    state = load_file(f)
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, str(f))
    msg = _load_error(model_copy)
    assert msg.startswith(f"{f}: tensor 'model.norm.weight' is stored as I32")
    assert "floating-point" in msg


@pytest.mark.parametrize("opening,closing", [(b"[", b"]"), (b'{"a":', b"}")], ids=["arrays", "objects"])
def test_deeply_nested_header(model_copy, opening, closing):
    f = model_copy / "model.safetensors"
    _write_raw(f, opening * 100_000 + b"1" * (opening == b'{"a":') + closing * 100_000)
    assert f"{f}: safetensors header is nested too deeply" in _load_error(model_copy)


def test_weights_file_that_is_a_directory(model_copy):
    f = model_copy / "model.safetensors"
    f.unlink()
    f.mkdir()
    assert f"{f}: is a directory, not a file" in _load_error(model_copy)


def test_overlapping_tensor_ranges(model_copy):
    f = model_copy / "model.safetensors"
    header, _ = _header(f)
    a, b = sorted(n for n in header if n.endswith("input_layernorm.weight"))
    header[b]["data_offsets"] = header[a]["data_offsets"]
    _rewrite_header(f, header)
    msg = _load_error(model_copy)
    assert msg.startswith(f"{f}: tensors ") and "overlap" in msg


def test_gap_between_tensor_ranges(model_copy):
    f = model_copy / "model.safetensors"
    header, data = _header(f)
    name = "model.norm.weight"
    begin, end = header[name]["data_offsets"]
    header.pop(name)  # its bytes stay in the file: a hole no tensor covers
    _write_raw(f, json.dumps(header).encode(), data)
    msg = _load_error(model_copy)
    assert f"{f}: " in msg and f"bytes {begin}..{end} of the data belong to no tensor" in msg


def test_duplicate_tensor_names_in_a_header(model_copy):
    f = model_copy / "model.safetensors"
    header, data = _header(f)
    text = json.dumps(header)
    entry = json.dumps(header["model.norm.weight"])
    text = text[:-1] + f', "model.norm.weight": {entry}' + "}"  # the same name twice
    _write_raw(f, text.encode(), data)
    assert "tensor 'model.norm.weight' appears twice in the header" in _load_error(model_copy)


def test_malformed_entry_echoes_nothing(model_copy):
    f = model_copy / "model.safetensors"
    header, _ = _header(f)
    header["model.norm.weight"]["shape"] = [SECRET]
    _rewrite_header(f, header)
    msg = _load_error(model_copy)
    assert "'model.norm.weight'" in msg and "shape" in msg and SECRET not in msg


def test_text_file_as_weights_echoes_nothing(model_copy):
    f = model_copy / "model.safetensors"
    f.write_text(f"root:x:0:0:{SECRET}\n" * 10)
    msg = _load_error(model_copy)
    first_bytes_as_length = str(struct.unpack("<Q", f.read_bytes()[:8])[0])
    assert "header length is larger than the file" in msg
    assert SECRET not in msg and "root:x" not in msg and first_bytes_as_length not in msg


def test_header_that_is_not_utf8_echoes_nothing(model_copy):
    f = model_copy / "model.safetensors"
    _write_raw(f, b'{"\xff' + SECRET.encode() + b'": 1}')
    msg = _load_error(model_copy)
    assert "not valid JSON" in msg and SECRET not in msg and "xff" not in msg


# ---- index files -----------------------------------------------------------------------------

def _shard(model_dir, weight_map_value):
    """Replace model.safetensors by an index whose every entry points at `weight_map_value`."""
    names = list(load_file(model_dir / "model.safetensors"))
    (model_dir / "model.safetensors").unlink()
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {n: weight_map_value for n in names}}))


@pytest.mark.parametrize("target", ["../../../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors",
                                    "..", "", "C:\\weights.safetensors"])
def test_index_cannot_point_outside_the_model_directory(model_copy, target):
    _shard(model_copy, target)
    msg = _load_error(model_copy)
    assert msg.startswith(f"{model_copy / 'model.safetensors.index.json'}: shard ")
    assert "must be a file name inside the model directory" in msg
    assert "root:x" not in msg and "3475222254926655346" not in msg  # nothing of /etc/passwd


def test_index_pointing_at_a_secret_next_door(model_copy):
    secret = model_copy.parent / "secret.safetensors"
    secret.write_text(SECRET * 100)
    _shard(model_copy, "../secret.safetensors")
    msg = _load_error(model_copy)
    assert "inside the model directory" in msg and SECRET not in msg


@pytest.mark.parametrize("text,expected", [
    ("[]", "expected a JSON object"),
    ('{"weight_map": []}', "weight_map is not an object"),
    ('{"weight_map": {"model.norm.weight": 3}}', "weight_map entry for 'model.norm.weight' is not a file name"),
    ("[" * 100_000, "nested too deeply"),
], ids=["array", "map-array", "map-number", "nested"])
def test_malformed_index(model_copy, text, expected):
    (model_copy / "model.safetensors.index.json").write_text(text)
    msg = _load_error(model_copy)
    assert msg.startswith(f"{model_copy / 'model.safetensors.index.json'}: ") and expected in msg


def test_index_that_is_a_directory(model_copy):
    (model_copy / "model.safetensors.index.json").mkdir()
    assert "model.safetensors.index.json: is a directory, not a file" in _load_error(model_copy)


def test_shards_in_a_subdirectory_still_load(model_copy):
    (model_copy / "weights").mkdir()
    (model_copy / "model.safetensors").rename(model_copy / "weights" / "model-00001-of-00001.safetensors")
    names = list(load_file(model_copy / "weights" / "model-00001-of-00001.safetensors"))
    (model_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "weights/model-00001-of-00001.safetensors" for n in names}}))
    load_model(model_copy, device="cpu")


# ---- non-finite weights ------------------------------------------------------------------------

def _poison(model_dir, name="model.layers.1.mlp.up_proj.weight", value=float("nan")):
    f = model_dir / "model.safetensors"
    state = load_file(f)
    state[name].view(-1)[7] = value
    save_file(state, str(f), metadata={"format": "pt"})
    return f


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weights_are_refused_by_default(model_copy, value):
    f = _poison(model_copy, value=value)
    msg = _load_error(model_copy)
    assert msg.startswith(f"{f}: tensor 'model.layers.1.mlp.up_proj.weight' has 1 non-finite (NaN or Inf) value")
    assert "allow_nonfinite=True (CLI: --allow-nonfinite)" in msg


def test_allow_nonfinite_loads_them_with_a_warning(model_copy):
    _poison(model_copy)
    with pytest.warns(UserWarning, match="model.layers.1.mlp.up_proj.weight"):
        model, _ = load_model(model_copy, device="cpu", allow_nonfinite=True)
    assert torch.isnan(model.layers[1].mlp.up_proj.weight).sum() == 1


def test_overflow_when_converting_to_float16_is_caught(model_copy):
    _poison(model_copy, name="model.norm.weight", value=1e6)  # finite in float32, Inf in float16
    load_model(model_copy, device="cpu")  # as float32: fine
    msg = _load_error(model_copy, dtype="float16")
    assert "'model.norm.weight' has 1 non-finite" in msg and "as float16" in msg


def test_nonfinite_pickled_weights_are_refused_too(model_copy):
    f = _poison(model_copy)
    torch.save(load_file(f), model_copy / "pytorch_model.bin")
    f.unlink()
    msg = _load_error(model_copy, allow_pickle=True)
    assert "pytorch_model.bin: tensor 'model.layers.1.mlp.up_proj.weight' has 1 non-finite" in msg


def test_pickle_holding_a_non_tensor(model_copy):
    state = load_file(model_copy / "model.safetensors")
    state["model.norm.weight"] = 3
    torch.save(state, model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    assert "pytorch_model.bin: 'model.norm.weight' is not a tensor" in _load_error(model_copy, allow_pickle=True)
