"""Fixtures for the server tests: a debug model made by `codegemma init`, and REAL server
processes (`python -m codegemma serve`) on free loopback ports, shared by the whole session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MAX_SEQ_LEN = 512  # small context: truncation is cheap to reach
STARTUP_TIMEOUT_S = 120


def _talkative(model_dir: Path) -> None:
    """Re-draw the random weights of `codegemma init` larger, and zero the control-token rows of
    the (tied) embedding: greedy output then varies from token to token and never stops on its
    own, so comparing texts across APIs means something (an init model repeats its last token,
    which after <|fim_middle|> is a stop: every FIM answer would be empty)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    state = load_file(str(path))
    gen = torch.Generator().manual_seed(1)
    for name, t in state.items():
        state[name] = (torch.randn(t.shape, generator=gen) * 0.3).to(t.dtype)
    state["model.embed_tokens.weight"][:108] = 0.0
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "codegemma-debug"
    proc = subprocess.run([sys.executable, "-m", "codegemma", "init", "--preset", "debug", "--out", str(out),
                           "--seed", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _talkative(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_dir: Path, log_path: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        cmd = [sys.executable, "-m", "codegemma", "serve", "--model", str(model_dir), "--port", str(self.port),
               "--max-seq-len", str(MAX_SEQ_LEN), "--device", "cpu", "--model-name", "codegemma-debug", *extra]
        # One torch thread: the model is tiny, and spinning OpenMP threads of two servers on a
        # busy 2-core machine slow every decode step down badly.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"the server died:\n{self.log()}"


def _start(tmp_path_factory, model_dir, name, *extra) -> ServerProcess:
    server = ServerProcess(model_dir, tmp_path_factory.mktemp(name) / "server.log", *extra)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_dir):
    """The main server: 4 slots, a roomy queue, no API key."""
    s = _start(tmp_path_factory, model_dir, "server", "--max-slots", "4", "--max-queue", "64")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def guarded_server(tmp_path_factory, model_dir):
    """A second server with an API key, one slot and a queue of one (to reach 429)."""
    s = _start(tmp_path_factory, model_dir, "guarded", "--max-slots", "1", "--max-queue", "1",
               "--api-key", "sekrit")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def spm_server(tmp_path_factory, model_dir):
    """A server that renders infill prompts suffix first (`--fim-mode spm`)."""
    s = _start(tmp_path_factory, model_dir, "spm", "--max-slots", "1", "--fim-mode", "spm")
    yield s
    s.stop()


@pytest.fixture()
def spm_client(spm_server):
    with httpx.Client(base_url=spm_server.url, timeout=60.0) as c:
        yield c
    spm_server.assert_alive()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c
    server.assert_alive()


def wait_idle(client: httpx.Client, timeout_s: float = 30.0) -> dict:
    """Poll /debug/slots until nothing runs or waits; returns the last stats."""
    deadline = time.monotonic() + timeout_s
    stats = {}
    while time.monotonic() < deadline:
        stats = client.get("/debug/slots").json()
        if stats["active_slots"] == 0 and stats["queue_length"] == 0 and stats["server_in_flight"] == 0:
            return stats
        time.sleep(0.1)
    return stats
