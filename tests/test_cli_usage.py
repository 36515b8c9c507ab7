"""Ordinary mistakes and ordinary use of the `codegemma` command, as a new user meets them: one line
that names the problem and the fix (exit 2), --version, help that shows every default, a newline on
a terminal, a quiet exit into `| head` (real subprocesses; a pseudo-terminal where a terminal matters)."""

from __future__ import annotations

import argparse
import os
import pty
import socket
import subprocess
import sys

import pytest
import torch

import codegemma
from tests.infer.conftest import model_dir  # noqa: F401  (session fixture: tiny random model dir)

NO_CUDA = not torch.cuda.is_available()


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def _one_line_error(r, *fragments):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(f"codegemma {codegemma.__version__} ")


def _options(parser, name="codegemma"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}")
        elif action.option_strings and action.dest not in ("help", "version"):
            # the help text as --help renders it (the formatter adds "(default: ...)" where missing)
            yield name, parser._get_formatter()._get_help_string(action) % {"default": action.default}, action


def test_every_option_has_help_that_shows_its_default():
    from codegemma.cli import build_parser

    missing = []
    for command, text, action in _options(build_parser()):
        flag = action.option_strings[-1]
        if not action.help:
            missing.append(f"{command} {flag}: no help")
        elif (action.default not in (None, False, [], ()) and not action.required
              and not isinstance(action, argparse._StoreConstAction) and "default" not in text):
            missing.append(f"{command} {flag}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


def test_help_tells_the_truth_about_presets_and_serving():
    r = _cli("init", "--help")
    assert r.returncode == 0 and "nano" in r.stdout
    r = _cli("serve", "--help")
    assert "--unsafe-no-api-key" in r.stdout and "(default: 4)" in r.stdout.replace("\n", " ").replace("  ", "")


@pytest.mark.parametrize("device, fragment", [
    pytest.param("cuda", "cuda", marks=pytest.mark.skipif(not NO_CUDA, reason="has CUDA")),
    pytest.param("cuda:7", "cuda:7", marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="has 8 GPUs")),
    ("gpu", "did you mean cuda"),
    ("tpu", "not a device name"),
    pytest.param("mps", "MPS", marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has MPS")),
])
def test_a_device_this_machine_lacks_is_one_line(device, fragment):
    _one_line_error(_cli("generate", "--prompt", "x", "--device", device), f"device {device!r}", fragment)


def test_every_model_command_checks_the_device_first(tmp_path):
    device = "gpu"  # not a device name anywhere; `train` is tested in tests/train/test_cli_train.py
    for command in (["complete", "--prefix", "x"], ["chat", "--model", tmp_path, "--message", "x"],
                    ["serve", "--port", "1"], ["eval", "run", "--benchmark", "humaneval", "--out", tmp_path / "e"]):
        _one_line_error(_cli(*command, "--device", device), f"device {device!r}", "did you mean cuda")
    assert not (tmp_path / "e").exists()  # eval run left nothing behind


@pytest.mark.skipif(not NO_CUDA, reason="has CUDA")
def test_python_load_on_a_device_this_machine_lacks_says_so():
    r = subprocess.run([sys.executable, "-c", "import codegemma; codegemma.load(device='cuda')"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("ValueError: device 'cuda': this PyTorch")


def test_generate_into_a_closed_pipe_exits_quietly(model_dir):  # noqa: F811
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", "generate", "--model", model_dir, "--prompt",
                             "def f(x):", "--max-new-tokens", "900", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1)  # like `| head -c 1`: read a little, then go away
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, stderr
    assert stderr == ""


def _on_a_terminal(*args) -> bytes:
    """stdout of `codegemma ARGS` written into a pseudo-terminal, as a user's shell shows it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", *map(str, args)], stdout=slave,
                            stderr=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0
    return out


def test_output_ends_with_a_newline_on_a_terminal_only(model_dir):  # noqa: F811
    with codegemma.load(model_dir, device="cpu") as cg:
        want = cg.generate("def add(a, b):", max_new_tokens=8)
    assert want and not want.endswith("\n")
    shown = _on_a_terminal("generate", "--model", model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", 8)
    assert shown == (want + "\n").replace("\n", "\r\n").encode()  # the terminal turns \n into \r\n
    piped = _cli("generate", "--model", model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", 8)
    assert piped.stdout == want  # a script gets exactly the model's text


def test_chat_refuses_the_builtin_base_model():
    r = _cli("chat", "--model", "nano", "--message", "hi")
    _one_line_error(r, "not instruction-tuned", "complete")


def test_serve_on_a_public_address_needs_a_key():
    r = _cli("serve", "--host", "0.0.0.0", "--port", "8999", env={**os.environ, "CODEGEMMA_API_KEY": ""})
    _one_line_error(r, "--api-key", "--unsafe-no-api-key")
    # with a key, or when insisting, it goes on to bind the port (taken here, so it stops there)
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        for extra, env in ((["--unsafe-no-api-key"], {}), ([], {"CODEGEMMA_API_KEY": "k"})):
            r = _cli("serve", "--host", "0.0.0.0", "--port", port, *extra, env={**os.environ, **env})
            _one_line_error(r, "cannot listen")
