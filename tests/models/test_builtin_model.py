"""codegemma-nano, the built-in default model: the resolver, its error, and the model itself through
transformers, codegemma.load and every command that defaults to it (real subprocesses, no mocks).

Tests that need the weights skip only when codegemma/models/nano/model.safetensors is absent (they are
committed separately from the code); everything else about the built-in model is tested regardless.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import torch

import codegemma
import codegemma.models
from codegemma.cli import main
from codegemma.models import BUILTIN_DIR, WEIGHTS_FILE, resolve_model

REPO = Path(__file__).resolve().parents[2]
FIB = REPO / "examples" / "fib.py"

needs_weights = pytest.mark.skipif(
    not (BUILTIN_DIR / WEIGHTS_FILE).is_file(),
    reason=f"the built-in model's weights ({BUILTIN_DIR / WEIGHTS_FILE}) are not in this checkout yet")


def _cli(*args, cwd=REPO, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO))  # this checkout's package, whatever is installed
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", cwd=cwd, env=env, timeout=timeout)


# ---- the resolver (no weights needed) -----------------------------------------------------------------

def test_resolver_maps_none_and_nano_to_the_builtin_and_passes_paths_through(tmp_path, monkeypatch):
    builtin = tmp_path / "nano"
    builtin.mkdir()
    (builtin / WEIGHTS_FILE).write_bytes(b"")  # only its presence is checked here
    monkeypatch.setattr(codegemma.models, "BUILTIN_DIR", builtin)
    assert resolve_model(None) == builtin and resolve_model("nano") == builtin
    for given in ("models/codegemma-2b", "./nano", "nano/", tmp_path / "nano"):
        assert resolve_model(given) == given  # a path is never reinterpreted, even one ending in nano


@pytest.mark.parametrize("name", [None, "nano"])
def test_missing_builtin_weights_is_one_clear_error(tmp_path, monkeypatch, name):
    empty = tmp_path / "nano"
    empty.mkdir()
    (empty / "config.json").write_text("{}")  # a half-installed folder is still "missing"
    monkeypatch.setattr(codegemma.models, "BUILTIN_DIR", empty)
    with pytest.raises(FileNotFoundError) as err:
        resolve_model(name)
    message = str(err.value)
    assert "built-in model 'nano' is not installed" in message and str(empty / WEIGHTS_FILE) in message
    assert "--model DIR" in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="built-in model 'nano' is not installed"):
        codegemma.load(name)


def test_commands_report_a_missing_builtin_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(codegemma.models, "BUILTIN_DIR", tmp_path / "absent")
    out = tmp_path / "eval-out"
    # (--port 0 is refused right after the model check: a broken check fails here instead of serving)
    for argv in (["complete", f"{FIB}:3:5"], ["generate", "--prompt", "x"], ["serve", "--port", "0"],
                 ["eval", "run", "--benchmark", "humaneval", "--out", str(out)],
                 ["export", "--model", "nano", "--gguf", str(tmp_path / "m.gguf")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "built-in model 'nano' is not installed" in err[0] and "--model DIR" in err[0], argv
    assert not out.exists() and not (tmp_path / "m.gguf").exists()  # nothing half-written


def test_a_wheel_ships_the_model_directory(tmp_path):
    """A non-editable install gets the model: build a wheel from a copy of the tree, offline."""
    pytest.importorskip("setuptools", reason="building a wheel without build isolation needs setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO / "codegemma", src / "codegemma", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("codegemma-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("codegemma/models/nano/")}
    want = {f"codegemma/models/nano/{p.relative_to(BUILTIN_DIR).as_posix()}" for p in BUILTIN_DIR.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert {"codegemma/models/nano/config.json", "codegemma/models/nano/tokenizer.json",
            "codegemma/models/nano/README.md"} <= want
    assert shipped == want


# ---- the model itself ---------------------------------------------------------------------------------

@needs_weights
def test_transformers_and_codegemma_compute_the_same_logits():
    import transformers

    from codegemma.fim.format import render_fim
    from codegemma.model.checkpoint import load_model
    from codegemma.tokenizer import Tokenizer

    source = FIB.read_text()
    cursor = source.index("    return a")
    prompt = render_fim(source[:cursor], source[cursor:], path="examples/fib.py")
    ours_tok = Tokenizer.load(BUILTIN_DIR)
    ids = ours_tok.encode(prompt, add_bos=True)
    theirs_tok = transformers.AutoTokenizer.from_pretrained(BUILTIN_DIR)
    assert theirs_tok(prompt)["input_ids"] == ids  # same pieces, same control tokens, same <bos>

    ours, config = load_model(BUILTIN_DIR, device="cpu", dtype=torch.float32)
    # torch_dtype (not .float() after a bf16 load: transformers would then build its buffers in bf16)
    theirs = transformers.GemmaForCausalLM.from_pretrained(BUILTIN_DIR, torch_dtype=torch.float32).eval()
    assert next(ours.parameters()).dtype == next(theirs.parameters()).dtype == torch.float32
    assert config.num_parameters() == sum(p.numel() for p in theirs.parameters())
    tokens = torch.tensor([ids])
    with torch.no_grad():
        want = theirs(tokens).logits
        got = ours(tokens)
    assert got.shape == (1, len(ids), config.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@needs_weights
def test_load_without_a_path_and_by_name_is_the_builtin():
    prompt = "def fibonacci(n):\n"
    with codegemma.load(device="cpu") as default:
        assert default.config.hidden_size == json.loads((BUILTIN_DIR / "config.json").read_text())["hidden_size"]
        text = default.generate(prompt, max_new_tokens=16)
    with codegemma.load("nano", device="cpu") as named:
        assert named.config == default.config
        assert named.generate(prompt, max_new_tokens=16) == text  # greedy: the same weights
    assert isinstance(text, str) and text


def _readme_first_command() -> list[str]:
    """The `codegemma ...` part of the README's first command (after the install steps)."""
    text = (REPO / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("pip install") and "codegemma " in ln)
    words = shlex.split(line.split("&&")[-1])
    assert words[0] == "codegemma", line
    return words[1:]


@needs_weights
def test_readme_first_command_completes_an_example_with_the_builtin_model():
    args = _readme_first_command()
    assert args[0] == "complete" and "--model" not in args
    spec = next(a for a in args if a.startswith("examples/"))
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    middle = r.stdout
    assert middle.strip(), f"empty middle; stderr: {r.stderr[-500:]}"
    # a sensible middle: the file with it filled in is valid Python
    path, line, col = spec.rsplit(":", 2)
    source = (REPO / path).read_text()
    lines = source.splitlines(keepends=True)
    cursor = sum(len(x) for x in lines[:int(line) - 1]) + int(col) - 1
    filled = source[:cursor] + middle.rstrip("\n") + source[cursor:]
    ast.parse(filled)


@needs_weights
def test_generate_defaults_to_the_builtin_model():
    r = _cli("generate", "--prompt", "def fibonacci(n):", "--max-new-tokens", 8)
    assert r.returncode == 0, r.stderr[-2000:]
    with codegemma.load("nano", device="cpu") as cg:
        assert r.stdout == cg.generate("def fibonacci(n):", max_new_tokens=8)


@needs_weights
def test_serve_defaults_to_the_builtin_model(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", "serve", "--port", str(port), "--device", "cpu",
                             "--log-level", "warning"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["nano"]
        reply = httpx.post(f"http://127.0.0.1:{port}/infill", timeout=120, json={
            "input_prefix": "def fibonacci(n):\n    ", "input_suffix": "\n", "n_predict": 8}).json()
        assert isinstance(reply["content"], str)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@needs_weights
def test_eval_run_defaults_to_the_builtin_model(tmp_path):
    from codegemma.eval.registry import get_benchmark

    data = Path(os.environ.get("CODEGEMMA_DATA_DIR") or REPO.parent / "shared" / "benchmarks")
    if not get_benchmark("humaneval-infill-single").data_present(data):
        pytest.skip(f"benchmark data not found at {data} (set CODEGEMMA_DATA_DIR)")
    out = tmp_path / "run"
    r = _cli("eval", "run", "--benchmark", "humaneval-infill-single", "--out", out, "--limit", 2,
             "--max-new-tokens", 16, "--data-dir", data, "--k", "1", "--device", "cpu", "--workers", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["samples"] == 2
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


@needs_weights
def test_export_takes_the_builtin_by_name(tmp_path):
    import gguf
    out = tmp_path / "nano.gguf"
    assert main(["export", "--model", "nano", "--gguf", str(out), "--dtype", "f32"]) == 0
    reader = gguf.GGUFReader(out)
    config = json.loads((BUILTIN_DIR / "config.json").read_text())
    assert reader.fields["gemma.block_count"].contents() == config["num_hidden_layers"]
