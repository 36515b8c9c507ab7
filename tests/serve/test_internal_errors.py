"""The server survives engine failures: 500 in each API's shape, in-band errors mid-stream.

An engine that fails on demand cannot be had for real, so this file (only) runs the app in-process
over a stand-in engine; the tokenizer, the app and the request handles are the real ones.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from codegemma.infer.requests import RequestHandle
from codegemma.serve.app import create_app
from codegemma.serve.backend import Backend
from codegemma.tokenizer import Tokenizer


class FailingEngine:
    """submit() raises (mode "raise") or returns a handle whose generation fails ("fail")."""

    max_seq_len = 256
    max_slots = 1

    def __init__(self):
        self.mode = "raise"

    def submit(self, ids, params, progress=False):
        if self.mode == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        handle = RequestHandle(0, lambda h: None)
        handle._push("partial", [5])
        handle._finish(None, error=RuntimeError("out of memory"))
        return handle

    def warm(self, ids):
        raise RuntimeError("warm failed")

    def stats(self):
        return {"queue_length": 0, "active_slots": 0}


@pytest.fixture(scope="module")
def app_client(model_dir):
    engine = FailingEngine()
    backend = Backend(engine, Tokenizer.load(model_dir), "stub")
    with TestClient(create_app(backend), raise_server_exceptions=False) as c:
        yield c, engine


def test_unexpected_errors_are_500_in_each_shape(app_client):
    c, engine = app_client
    engine.mode = "raise"
    r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "illegal memory access" in r.json()["error"]["message"]
    r = c.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
    assert r.status_code == 500 and isinstance(r.json()["error"], str)
    r = c.post("/infill", json={"input_prefix": "x", "input_suffix": "", "n_predict": 0})
    assert r.status_code == 500 and r.json()["error"]["code"] == 500
    assert c.get("/health").json() == {"status": "ok"}  # still serving


def test_generation_failure_mid_stream_is_reported_in_band(app_client):
    c, engine = app_client
    engine.mode = "fail"
    with c.stream("POST", "/v1/completions", json={"prompt": "x", "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert r.status_code == 200
    assert json.loads(lines[0][6:])["choices"][0]["text"] == "partial"
    assert "out of memory" in json.loads(lines[-2][6:])["error"]["message"] and lines[-1] == "data: [DONE]"
    with c.stream("POST", "/api/generate", json={"model": "m", "prompt": "x"}) as r:
        rows = [json.loads(ln) for ln in r.iter_lines() if ln]
    assert rows[0]["response"] == "partial" and "out of memory" in rows[-1]["error"]
    with c.stream("POST", "/infill", json={"input_prefix": "x", "input_suffix": "", "stream": True}) as r:
        events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln]
    assert events[0]["content"] == "partial" and events[-1]["error"]["code"] == 500
    # Non-streaming: a 500 in the family's shape.
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500 and "out of memory" in r.json()["error"]["message"]
