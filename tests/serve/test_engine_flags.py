"""`serve --speculate N --cache-reuse N` on a real server: the editors' ring-buffer move reuses the
shifted chunks and repeated requests draft from the previous completion; /metrics counts both."""

from __future__ import annotations

import json
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
               "--no-ui", "--batch-size", "32", "--alias", "codegemma-debug,fim,code", "--tags", "small,fim")
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


def _progress_events(c, path, body) -> list[dict]:
    with c.stream("POST", path, json={**body, "stream": True, "return_progress": True}) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert any(e.get("content") or e.get("choices") for e in events)  # the completion itself still streams
    return [e["prompt_progress"] for e in events if "prompt_progress" in e]


def test_return_progress_reports_each_prompt_chunk(reuse_server):
    """llama.cpp's return_progress: one report as prompt processing starts (cache == processed), one
    after each --batch-size chunk (processed grows, time_ms too), the last at processed == total."""
    prompt = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(12))
    body = {"prompt": prompt, "n_predict": 2, "temperature": 0}
    with httpx.Client(base_url=reuse_server.url, timeout=120) as c:
        for round_ in range(2):  # the second time, the prompt is cached
            reports = _progress_events(c, "/completion", body)
            first, last = reports[0], reports[-1]
            assert first["cache"] == first["processed"] and last["processed"] == last["total"]
            assert all(p["total"] == first["total"] and p["cache"] == first["cache"] for p in reports)
            assert all(b["processed"] > a["processed"] and b["time_ms"] >= a["time_ms"]
                       for a, b in zip(reports, reports[1:]))
            assert len(reports) == 1 + -(-(last["total"] - first["cache"]) // 32)
            # first: at most <bos> shared with an earlier request; again: all but the last token reused
            assert first["cache"] <= 1 if round_ == 0 else first["cache"] == first["total"] - 1
        assert first["total"] > 64  # several chunks of 32 the first time
        chat = _progress_events(c, "/v1/chat/completions",
                                {"messages": [{"role": "user", "content": prompt}], "max_tokens": 2})
        assert chat and chat[-1]["processed"] == chat[-1]["total"]
        plain = c.post("/completion", json={**body, "stream": True}).text  # not asked: none sent
        assert "prompt_progress" not in plain


def test_aliases_and_tags_as_llama_server_lists_them(reuse_server):
    with httpx.Client(base_url=reuse_server.url, timeout=60) as c:
        card = c.get("/v1/models").json()["data"][0]
        assert card["id"] == "code"  # the first alias in alphabetical order, as llama-server's
        assert card["aliases"] == ["code", "codegemma-debug", "fim"] and card["tags"] == ["fim", "small"]
        r = c.post("/v1/completions", json={"model": "fim", "prompt": "x = ", "max_tokens": 1})
        assert r.status_code == 200 and r.json()["model"] == "fim"


def test_bad_flag_values_are_one_line(model_dir):
    for flag, value in (("--speculate", "-1"), ("--batch-size", "0"), ("--alias", " , ")):
        r = run_serve("--model", str(model_dir), flag, value)
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr
