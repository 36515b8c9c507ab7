"""`serve --speculate N --cache-reuse N` on a real server: the editors' ring-buffer move reuses the
shifted chunks and repeated requests draft from the previous completion; /metrics counts both."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.serve.conftest import _start
from tests.serve.test_serve_command import run_serve


def _counter(text: str, name: str) -> float:
    m = re.search(rf"^{name}_total (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


@pytest.fixture(scope="module")
def reuse_server(tmp_path_factory, model_dir):
    s = _start(tmp_path_factory, model_dir, "reuse", "--max-slots", "1", "--speculate", "6", "--cache-reuse", "8",
               "--no-ui")
    yield s
    s.stop()


def test_ring_buffer_move_reuses_chunks_and_drafts_are_counted(reuse_server):
    chunks = [{"filename": f"src/m{i}.py", "text": "".join(f"def f{i}_{j}(x):\n    return x * {j}\n"
                                                            for j in range(6))} for i in range(5)]
    body = {"input_prefix": "def mean(xs):\n    ", "input_suffix": "\n", "n_predict": 8, "temperature": 0,
            "samplers": ["top_k", "top_p", "infill"], "top_k": 40, "top_p": 0.99}
    with httpx.Client(base_url=reuse_server.url, timeout=120) as c:
        first = c.post("/infill", json={**body, "input_extra": chunks[:4]})
        moved = c.post("/infill", json={**body, "input_extra": chunks[1:5]})  # oldest dropped, one added
        # Drafts come from the slot's previous completion: llama.vim's infill sampler may end the answer at
        # once on random weights (nothing to draft from), so the repeated request is a plain greedy one.
        plain = {k: v for k, v in body.items() if k not in ("samplers", "top_k", "top_p")}
        again = [c.post("/infill", json={**plain, "input_extra": chunks[1:5]}) for _ in range(2)]
        assert first.status_code == moved.status_code == again[0].status_code == again[1].status_code == 200
        assert again[0].json()["content"] and again[1].json()["content"] == again[0].json()["content"]
        assert moved.json()["tokens_cached"] > 0
        text = c.get("/metrics").text
    assert _counter(text, "codegemma_cache_reuse_chunks") >= 1
    assert _counter(text, "codegemma_cache_reuse_tokens") > 0
    assert _counter(text, "codegemma_speculative_draft_tokens") > 0
    assert _counter(text, "codegemma_speculative_accepted_tokens") >= 0
    reuse_server.assert_alive()


def test_no_ui_turns_the_page_off_and_nothing_else(reuse_server):
    with httpx.Client(base_url=reuse_server.url, timeout=60) as c:
        page = c.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "--no-ui" in page.text
        assert c.get("/").status_code == 404  # llama-server's --no-ui: any GET /
        assert c.head("/").status_code == 200  # the Ollama client's heartbeat
        assert c.get("/", headers={"Accept": "text/plain"}).text == "Ollama is running"
        assert c.get("/health").status_code == 200
        assert c.post("/infill", json={"input_prefix": "x = ", "input_suffix": "", "n_predict": 2}).status_code == 200


def test_bad_flag_values_are_one_line(model_dir):
    r = run_serve("--model", str(model_dir), "--speculate", "-1")
    assert r.returncode == 2 and "--speculate" in r.stderr and "Traceback" not in r.stderr
