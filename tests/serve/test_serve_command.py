"""`codegemma serve` argument errors end in one clear line (exit status 2), before any model load."""

from __future__ import annotations

import socket
import subprocess
import sys


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codegemma", "serve", *args], capture_output=True, text=True,
                          timeout=120)


def test_missing_model_directory(tmp_path):
    r = run_serve("--model", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "model directory not found" in r.stderr and "Traceback" not in r.stderr


def test_port_in_use(model_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_serve("--model", str(model_dir), "--port", str(port))
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
