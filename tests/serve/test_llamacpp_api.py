"""The llama.cpp routes (/infill, /completion) as llama.vim and llama.vscode call them."""

from __future__ import annotations

import json

import pytest

from codegemma.fim.format import render_fim
from codegemma.serve.llamacpp_api import IndentGuard, nested_fields

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
EXTRA = [{"filename": "util.py", "text": "def helper():\n    return 42\n"},
         {"filename": "consts.py", "text": "LIMIT = 10\n", "time": 0}]
GREEDY = {"temperature": 0, "n_predict": 10}


def infill(client, **body):
    r = client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, **GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_infill_reply_fields(client):
    r = infill(client)
    assert r["content"] and r["stop"] is True and r["stop_type"] == "limit"
    assert r["truncated"] is False and r["tokens_predicted"] == 10
    t = r["timings"]
    assert t["predicted_n"] == 10 and t["prompt_n"] + t["cache_n"] == r["tokens_evaluated"]


def test_extra_files_are_multi_file_context(client):
    with_extra = infill(client, input_extra=EXTRA)
    rendered = render_fim(PREFIX, SUFFIX, context=[(e["filename"], e["text"]) for e in EXTRA])
    same = client.post("/completion", json={"prompt": rendered, **GREEDY}).json()
    assert with_extra["content"] == same["content"]
    assert with_extra["tokens_evaluated"] == same["tokens_evaluated"] > infill(client)["tokens_evaluated"]


def test_prompt_goes_after_the_middle_token(client):
    r = infill(client, prompt="    return")
    rendered = render_fim(PREFIX, SUFFIX) + "    return"
    assert r["content"] == client.post("/completion", json={"prompt": rendered, **GREEDY}).json()["content"]


def test_n_predict_zero_only_warms_the_cache(client):
    body = {"input_extra": EXTRA, "input_prefix": "import os\n", "input_suffix": "", "n_predict": 0,
            "samplers": [], "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""]}
    r = client.post("/infill", json=body)
    assert r.status_code == 200 and r.json() == {}  # response_fields [""] selects nothing, as in llama.cpp
    r = client.post("/infill", json={**body, "response_fields": ["content", "tokens_cached", "timings/prompt_n"]})
    assert r.json()["content"] == "" and r.json()["tokens_cached"] > 0
    # The real request that follows reuses the warmed prefix.
    follow = infill(client, input_extra=EXTRA, input_prefix="import os\n", input_suffix="")
    assert follow["tokens_cached"] >= r.json()["tokens_cached"] - 1


def test_response_fields_use_literal_paths(client):
    r = infill(client, response_fields=["content", "timings/prompt_n", "timings/predicted_n", "truncated"])
    assert set(r) == {"content", "timings/prompt_n", "timings/predicted_n", "truncated"}
    assert r["timings/predicted_n"] == 10


def test_n_cmpl_returns_an_array(client):
    r = client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_cmpl": 3, **GREEDY})
    assert r.status_code == 200
    alts = r.json()
    assert isinstance(alts, list) and [a["index"] for a in alts] == [0, 1, 2]
    assert len({a["content"] for a in alts}) == 1  # greedy


def test_streaming_is_llamacpp_sse(client):
    with client.stream("POST", "/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "stream": True,
                                                **GREEDY}) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln]
    assert "data: [DONE]" not in lines
    events = [json.loads(ln[len("data: "):]) for ln in lines]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "timings" in events[-1] and events[-1]["stop_type"] == "limit"
    assert "".join(e["content"] for e in events) == infill(client)["content"]


def test_stop_word(client):
    text = infill(client)["content"]
    word = text[2:4]
    r = infill(client, stop=[word])
    assert r["content"] == text[:text.index(word)]
    assert r["stop_type"] == "word" and r["stopping_word"] == word


def test_long_input_is_truncated_not_refused(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    prefix = "".join(f"x{i} = {i}\n" for i in range(800))
    suffix = "".join(f"y{i} = {i}\n" for i in range(800))
    r = client.post("/infill", json={"input_prefix": prefix, "input_suffix": suffix, "input_extra": EXTRA,
                                     **GREEDY}).json()
    assert r["truncated"] is True and r["content"]
    assert r["tokens_evaluated"] + r["tokens_predicted"] <= MAX_SEQ_LEN
    r = client.post("/completion", json={"prompt": render_fim(prefix, suffix), **GREEDY}).json()
    assert r["truncated"] is True and r["tokens_evaluated"] <= MAX_SEQ_LEN


def _llamacpp_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"] and err["type"]
    return err


@pytest.mark.parametrize("body", [
    {"input_prefix": "x"},                                # input_suffix missing
    {"input_prefix": "x", "input_suffix": 3},              # wrong type
    {"input_prefix": "x", "input_suffix": "", "n_predict": -2},
    {"input_prefix": "x", "input_suffix": "", "input_extra": [{"filename": "a.py"}]},
    {"input_prefix": "x", "input_suffix": "", "input_extra": "not a list"},
    {"input_prefix": "x", "input_suffix": "", "n_cmpl": 2, "stream": True},
])
def test_bad_infill_requests_get_400_in_llamacpp_shape(client, body):
    assert _llamacpp_error(client.post("/infill", json=body), 400)["type"] == "invalid_request_error"


def test_bad_completion_json(client):
    _llamacpp_error(client.post("/completion", content="{broken"), 400)
    _llamacpp_error(client.post("/completion", json={"n_predict": 3}), 400)


def test_indent_guard_follows_llamacpp():
    g = IndentGuard(4)
    sent = g.feed("x = 1\n") + g.feed("    y = 2\n") + g.feed("  ") + g.feed("z")
    assert g.stopped and g.text == "x = 1\n    y = 2\n  " and sent == g.text
    g = IndentGuard(4)
    assert g.feed("a\n  ") == "a\n"  # the indentation of an unfinished line is held back
    assert not g.stopped and g.feed("      b") == "        b" and not g.stopped
    assert IndentGuard(0).feed("a\nb") == "a\nb"


def test_nested_fields():
    obj = {"content": "c", "timings": {"prompt_n": 3}}
    assert nested_fields(["content", "timings/prompt_n", "missing/x", ""], obj) == {"content": "c",
                                                                                  "timings/prompt_n": 3}


def test_n_indent_cuts_at_a_less_indented_line(client):
    body = {"input_prefix": "import os\nimport sys\n", "input_suffix": "\n", "n_predict": 48, "temperature": 0}
    text = client.post("/infill", json=body).json()["content"]
    assert "\n" in text, "the test model's reply has no newline: pick another prefix"
    nl = text.index("\n")
    pos = nl + 1
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    assert pos < len(text) and pos - nl - 1 < 4  # the line after the first newline is indented < 4
    cut = client.post("/infill", json={**body, "n_indent": 4}).json()
    assert cut["content"] == text[:pos] and cut["stop_type"] == "limit"
    with client.stream("POST", "/infill", json={**body, "n_indent": 4, "stream": True}) as r:
        events = [json.loads(ln[len("data: "):]) for ln in r.iter_lines() if ln]
    assert "".join(e["content"] for e in events) == text[:pos] and events[-1]["stop"] is True


def test_props(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    props = client.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == MAX_SEQ_LEN and props["total_slots"] == 4


def test_fim_mode_spm_renders_every_infill_suffix_first(spm_client):
    r = infill(spm_client)
    spm = spm_client.post("/completion", json={"prompt": render_fim(PREFIX, SUFFIX, mode="spm"), **GREEDY}).json()
    psm = spm_client.post("/completion", json={"prompt": render_fim(PREFIX, SUFFIX), **GREEDY}).json()
    assert r["content"] == spm["content"]
    assert psm["content"] != spm["content"]     # the two orders are told apart by this model
