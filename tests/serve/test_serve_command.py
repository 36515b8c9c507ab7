"""`codegemma serve` argument errors end in one clear line (exit status 2), before any model load."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest


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


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")


@needs_ipv6
def test_a_busy_second_address_is_one_line_and_frees_the_first(model_dir):
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_serve("--model", str(model_dir), "--host", "127.0.0.1,::1", "--port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot listen on [::1]:{port}" in r.stderr, r.stderr
    with socket.socket() as again:  # the first address was let go
        again.bind(("127.0.0.1", port))


def test_an_empty_host_list_is_one_line(model_dir):
    r = run_serve("--model", str(model_dir), "--host", " , ")
    assert r.returncode == 2 and "--host needs an address" in r.stderr and "Traceback" not in r.stderr


def test_a_wildcard_beside_an_address_it_covers_is_one_line(model_dir):
    # both bind, but the second could not listen: refused before the model loads, not a traceback later
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_serve("--model", str(model_dir), "--host", "0.0.0.0,127.0.0.1", "--port", str(port),
                  "--unsafe-no-api-key")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--host 0.0.0.0 already listens on every address of its family, 127.0.0.1 included" in r.stderr


@needs_ipv6
def test_several_addresses_serve_the_same_server(model_dir, tmp_path):
    """llama-server's --host 127.0.0.1,::1: Node-based editors may resolve localhost to either. localhost
    is 127.0.0.1 again: bound once (listening twice on it failed with a traceback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", "serve", "--model", str(model_dir), "--host",
                             "127.0.0.1,localhost,[::1]", "--port", str(port), "--max-seq-len", "64"],
                            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        for base in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            assert httpx.get(base + "/health", timeout=10).status_code == 200
            r = httpx.post(base + "/infill", json={"input_prefix": "x = ", "input_suffix": "", "n_predict": 2},
                           timeout=60)
            assert r.status_code == 200 and r.json()["tokens_predicted"] >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "http://[::1]:%d" % port in (tmp_path / "serve.log").read_text()
