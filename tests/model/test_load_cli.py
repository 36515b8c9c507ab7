"""Broken model directories through the `codegemma` command: one line on stderr, exit 2, no
traceback; and a folder that is not a model is told what a model directory holds, on every
command that loads one. A few cases run the real command in a subprocess; the rest call
codegemma.cli.main in this process (the same code, without a second torch import per case)."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

import codegemma


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, encoding="utf-8")


@pytest.fixture
def run_main(capsys):
    """codegemma.cli.main(args) in this process -> (returncode, stderr); a traceback would escape as an
    exception and fail the test."""
    from codegemma.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    return run


def _one_line_error(r, *fragments) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("codegemma ") and ": error: " in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _tensors(d, change):
    f = d / "model.safetensors"
    state = load_file(f)
    change(state)
    save_file(state, str(f), metadata={"format": "pt"})


def _nested_header(d):
    header = b"[" * 100_000 + b"]" * 100_000
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


def _weights_dir(d):
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()


def _index_to_passwd(d):
    names = list(load_file(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "../../../../../../../etc/passwd" for n in names}}))


def _nan(state):
    state["model.norm.weight"][3] = float("nan")


BREAKERS = {
    "config_array": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json: expected a JSON object"),
    "eos_empty": (lambda d: _config(d, eos_token_id=[]), "eos_token_id must be a token id"),
    "layers_fraction": (lambda d: _config(d, num_hidden_layers=2.5), "num_hidden_layers must be an integer"),
    "eps_string": (lambda d: _config(d, rms_norm_eps="1e-6"), "rms_norm_eps must be a number"),
    "theta_string": (lambda d: _config(d, rope_theta="10000"), "rope_theta must be a number"),
    "int32_tensor": (lambda d: _tensors(d, lambda s: s.update({"model.norm.weight": s["model.norm.weight"].int()})),
                     "tensor 'model.norm.weight' is stored as I32"),
    "nested_header": (_nested_header, "safetensors header is nested too deeply"),
    "weights_are_a_directory": (_weights_dir, "model.safetensors: is a directory, not a file"),
    "index_to_etc_passwd": (_index_to_passwd, "must be a file name inside the model directory"),
    "nan_weights": (lambda d: _tensors(d, _nan), "'model.norm.weight' has 1 non-finite (NaN or Inf) value"),
}


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_generate_with_a_broken_model_prints_one_line(model_copy, run_main, case):
    breaker, expected = BREAKERS[case]
    breaker(model_copy)
    line = _one_line_error(run_main("generate", "--model", model_copy, "--prompt", "x", "--device", "cpu"), expected)
    assert line.startswith(f"codegemma generate: error: {model_copy}") and "root:x" not in line


@pytest.mark.parametrize("case", ["config_array", "nested_header", "nan_weights"])
def test_the_real_command_prints_one_line(model_copy, case):
    breaker, expected = BREAKERS[case]
    breaker(model_copy)
    _one_line_error(_cli("generate", "--model", model_copy, "--prompt", "x", "--device", "cpu"), expected)


def test_allow_nonfinite_on_the_command_line(model_copy, tmp_path, run_main):
    _tensors(model_copy, _nan)
    _one_line_error(run_main("export", "--model", model_copy, "--gguf", tmp_path / "m.gguf"), "--allow-nonfinite")
    pytest.importorskip("gguf")
    r = _cli("export", "--model", model_copy, "--gguf", tmp_path / "m.gguf", "--allow-nonfinite")
    assert r.returncode == 0, r.stderr
    assert "non-finite" in r.stderr and "loaded anyway" in r.stderr and (tmp_path / "m.gguf").is_file()


def test_a_folder_that_is_not_a_model_through_the_real_command(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    r = _cli("generate", "--model", tmp_path, "--prompt", "x")
    _one_line_error(r, f"{tmp_path}: config.json: missing; a model directory holds config.json")


@pytest.mark.parametrize("command", ["generate", "complete", "chat", "serve", "eval", "export", "train"])
def test_every_command_says_what_a_model_directory_holds(tmp_path, run_main, command):
    folder = tmp_path / "some" / "dir"  # an ordinary folder: no config.json, no weights, no tokenizer
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not a model")
    out = tmp_path / "out"
    args = {
        "generate": ["generate", "--model", folder, "--prompt", "x"],
        "complete": ["complete", "--model", folder, "--prefix", "x"],
        "chat": ["chat", "--model", folder, "--message", "hi"],
        "serve": ["serve", "--model", folder],
        "eval": ["eval", "run", "--benchmark", "humaneval", "--model", folder, "--out", out],
        "export": ["export", "--model", folder, "--gguf", out / "m.gguf"],
        "train": ["train", "--init", folder, "--data", tmp_path / "shards", "--out", out, "--steps", "1"],
    }[command]
    line = _one_line_error(run_main(*args), f"{folder}: config.json: missing; a model directory holds "
                           "config.json", "tokenizer.json")
    assert "next to its config.json" not in line
    assert not (out / "m.gguf").exists() and not any(out.glob("*.jsonl"))


def test_the_python_api_says_it_too(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing; a model directory holds"):
        codegemma.load(model_copy, device="cpu")


def test_the_python_api_refuses_and_allows_nonfinite(model_copy):
    _tensors(model_copy, _nan)
    with pytest.raises(ValueError, match="non-finite"):
        codegemma.load(model_copy, device="cpu")
    with pytest.warns(UserWarning, match="loaded anyway"):
        cg = codegemma.load(model_copy, device="cpu", allow_nonfinite=True)
    with cg:
        assert torch.isnan(cg.model.norm.weight).any()


def test_export_without_a_tokenizer_gives_the_tokenizer_message(model_copy, tmp_path, run_main):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_copy / name).unlink(missing_ok=True)
    _one_line_error(run_main("export", "--model", model_copy, "--gguf", tmp_path / "m.gguf"),
                    f"{model_copy}: no tokenizer.json or tokenizer.model here")


def test_train_init_refuses_and_allows_nonfinite(model_copy, tmp_path):
    from codegemma.train.config import TrainConfig
    from codegemma.train.parallel import close_runtime, init_runtime
    from codegemma.train.setup import build_model

    _tensors(model_copy, _nan)
    rt = init_runtime("cpu")
    try:
        cfg = TrainConfig(out=str(tmp_path / "run"), sft=str(tmp_path / "chats.jsonl"), init=str(model_copy))
        with pytest.raises(ValueError, match="--allow-nonfinite"):
            build_model(cfg, rt)
        with pytest.warns(UserWarning, match="loaded anyway"):
            model, _ = build_model(dataclasses.replace(cfg, allow_nonfinite=True), rt)
        assert torch.isnan(model.norm.weight).any()
    finally:
        close_runtime(rt)
