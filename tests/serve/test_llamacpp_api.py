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


def test_reply_carries_prompt_tokens_and_has_new_line(client):
    r = infill(client, n_predict=24, return_tokens=True)
    ids = r["tokens"]
    assert ids and all(isinstance(i, int) for i in ids)
    assert client.post("/detokenize", json={"tokens": ids}).json()["content"] == r["content"]
    assert r["prompt"] == "<bos>" + render_fim(PREFIX, SUFFIX)  # the processed prompt, as llama.cpp's
    assert r["has_new_line"] == ("\n" in r["content"])
    assert infill(client)["tokens"] == []  # only with return_tokens, as llama.cpp


def test_streamed_events_carry_ids_and_the_last_has_new_line_of_the_whole_output(client):
    body = {"input_prefix": "import os\nimport sys\n", "input_suffix": "\n", "n_predict": 48, "temperature": 0}
    whole = client.post("/infill", json=body).json()["content"]
    assert "\n" in whole, "the test model's reply has no newline: pick another prefix"
    with client.stream("POST", "/infill", json={**body, "stream": True}) as r:
        events = [json.loads(ln[len("data: "):]) for ln in r.iter_lines() if ln]
    assert all(e["tokens"] for e in events[:-1])  # llama.cpp streams ids with every piece
    assert "".join(e["content"] for e in events) == whole
    assert events[-1]["stop"] is True and events[-1]["content"] == ""
    assert events[-1]["has_new_line"] is True  # of the whole output, not of the last (empty) piece


def test_tokenize_and_detokenize(client):
    text = "def f(x):\n    return x  # é"
    ids = client.post("/tokenize", json={"content": text}).json()["tokens"]
    assert all(isinstance(i, int) for i in ids)
    assert client.post("/detokenize", json={"tokens": ids}).json()["content"] == text
    with_bos = client.post("/tokenize", json={"content": text, "add_special": True}).json()["tokens"]
    assert with_bos[1:] == ids and with_bos[0] != ids[0]
    pieces = client.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == ids
    assert "".join(p["piece"] for p in pieces if isinstance(p["piece"], str)).startswith("def f(x):\n    return")
    special = client.post("/tokenize", json={"content": "<|fim_prefix|>"}).json()["tokens"]
    plain = client.post("/tokenize", json={"content": "<|fim_prefix|>", "parse_special": False}).json()["tokens"]
    assert len(special) == 1 and len(plain) > 1
    _llamacpp_error(client.post("/detokenize", json={"tokens": [10**9]}), 400)


def test_prompt_shapes_of_completion(client):
    ids = client.post("/tokenize", json={"content": "x = 1\n", "add_special": True}).json()["tokens"]
    one = client.post("/completion", json={"prompt": ids, **GREEDY}).json()
    text = client.post("/completion", json={"prompt": "x = 1\n", **GREEDY}).json()
    assert one["content"] == text["content"] and one["tokens_evaluated"] == len(ids)
    many = client.post("/completion", json={"prompt": [ids, "x = 1\n"], **GREEDY}).json()
    assert [m["content"] for m in many] == [one["content"]] * 2
    mixed = client.post("/completion", json={"prompt": ["x = ", 16, "\n"], **GREEDY})  # ids and texts in one
    assert mixed.status_code == 200 and isinstance(mixed.json()["content"], str)
    obj = client.post("/completion", json={"prompt": {"prompt_string": "x = 1\n"}, **GREEDY}).json()
    assert obj["content"] == text["content"]
    _llamacpp_error(client.post("/completion", json={"prompt": {"prompt_string": "x", "multimodal_data": ["AA=="]}}), 400)


def test_plain_prompt_too_long_is_refused_with_llamacpp_overflow_error(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    prose = "the quick brown fox jumps over the lazy dog " * 200
    err = _llamacpp_error(client.post("/completion", json={"prompt": prose, "n_predict": 4}), 400)
    assert err["type"] == "exceed_context_size_error"
    assert err["n_ctx"] == MAX_SEQ_LEN and err["n_prompt_tokens"] > MAX_SEQ_LEN


def test_structured_output_is_refused_naming_the_field(client):
    for field, value in (("grammar", 'root ::= "a"'), ("json_schema", {"type": "object"}),
                         ("response_format", {"type": "json_object"})):
        err = _llamacpp_error(client.post("/completion", json={"prompt": "x", field: value}), 400)
        assert field in err["message"]


def test_slots_and_props(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    slots = client.get("/slots").json()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    assert all(s["n_ctx"] == MAX_SEQ_LEN and isinstance(s["is_processing"], bool) for s in slots)
    props = client.get("/props").json()
    params = props["default_generation_settings"]["params"]
    assert params["temperature"] == 0.8 and params["top_k"] == 40 and params["n_predict"] == -1
    assert props["model_alias"] == "codegemma-debug" and props["modalities"] == {"vision": False, "audio": False}


def test_n_predict_zero_on_every_route_generates_nothing(client):
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n_predict": 0,
                                                     "samplers": [], "response_fields": [""], "id_slot": 7})
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 0
    assert chat.json()["choices"][0]["message"]["content"] == ""
    r = client.post("/completion", json={"prompt": "x = 1\n", "n_predict": 0}).json()
    assert r["content"] == "" and r["tokens_predicted"] == 0


def test_n_probs(client):
    r = infill(client, n_probs=3, n_predict=4)
    probs = r["completion_probabilities"]
    assert len(probs) == 4 and all(len(p["top_logprobs"]) == 3 and p["logprob"] <= 0 for p in probs)
    assert "".join(p["token"] for p in probs) == r["content"]
    post = infill(client, n_probs=3, n_predict=4, post_sampling_probs=True)["completion_probabilities"]
    assert all(0 < p["prob"] <= 1 for p in post)


def test_logit_bias_bans_a_token(client):
    r = infill(client, n_predict=4, return_tokens=True)
    first = r["tokens"][0]
    banned = infill(client, n_predict=4, return_tokens=True, logit_bias=[[first, False]])
    assert first not in banned["tokens"]
    as_object = infill(client, n_predict=4, return_tokens=True, logit_bias={str(first): -1e9})
    assert as_object["tokens"] == banned["tokens"]


def test_ignore_eos_bans_the_end_of_generation_tokens(client):
    """llama.cpp's ignore_eos: every end-of-generation token gets a -inf bias (reported as null in
    generation_settings.logit_bias, as llama.cpp does), so generation runs to n_predict."""
    r = infill(client, n_predict=6, ignore_eos=True, return_tokens=True)
    banned = r["generation_settings"]["logit_bias"]
    assert banned and all(b["bias"] is None for b in banned)
    eog = [b["token"] for b in banned]
    assert r["tokens_predicted"] == 6 and r["stop_type"] == "limit" and not set(r["tokens"]) & set(eog)
    # without it, the same tokens made overwhelmingly likely end the completion at once
    boost = [[t, 100] for t in eog]
    stopped = infill(client, n_predict=6, logit_bias=boost)
    assert stopped["stop_type"] == "eos" and stopped["content"] == "" and stopped["tokens_predicted"] <= 1
    kept = infill(client, n_predict=6, logit_bias=boost, ignore_eos=True)  # the ban wins over a boost
    assert kept["tokens_predicted"] == 6 and kept["stop_type"] == "limit"
    assert infill(client, n_predict=6)["generation_settings"]["logit_bias"] == []
    r = client.post("/v1/completions", json={"prompt": "def f(x):\n", "max_tokens": 6, "temperature": 0,
                                              "logit_bias": {str(t): 100 for t in eog}, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length", r.text[:300]


def test_generation_rate_counts_decode_steps_not_the_first_token(client):
    """predicted_ms runs from the first token (which comes with the prompt) to the end: n tokens are
    n - 1 decode steps, as llama.cpp reports them; one token is no rate at all (not 1 / ~0 ms)."""
    one = infill(client, n_predict=1, ignore_eos=True)["timings"]
    assert one["predicted_n"] == 1 and one["predicted_per_second"] == 0.0 and one["predicted_per_token_ms"] == 0.0
    t = infill(client, n_predict=8, ignore_eos=True)["timings"]
    assert t["predicted_n"] == 8 and t["predicted_ms"] > 0
    assert abs(t["predicted_per_second"] - 1e3 * 7 / t["predicted_ms"]) < 1e-6
    assert abs(t["predicted_per_token_ms"] - t["predicted_ms"] / 7) < 1e-9


def test_samplers_list(client):
    assert infill(client, samplers=["top_k", "top_p", "infill"])["content"] is not None
    err = _llamacpp_error(client.post("/infill", json={"input_prefix": "", "input_suffix": "", "samplers": ["bogus"]}), 400)
    assert "bogus" in err["message"]


def test_server_request_defaults_and_no_slots(spm_client):
    r = spm_client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX}).json()
    assert r["tokens_predicted"] == 5  # --n-predict: the limit of a request that sets none
    settings = r["generation_settings"]
    assert settings["n_predict"] == 5 and settings["temperature"] == 0 and settings["seed"] == 3
    assert spm_client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 7}
                           ).json()["tokens_predicted"] == 7  # a default, not a cap (as llama-server)
    again = spm_client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX}).json()
    assert again["content"] == r["content"]  # --temp 0: greedy
    params = spm_client.get("/props").json()["default_generation_settings"]["params"]
    assert (params["n_predict"], params["temperature"], params["seed"]) == (5, 0, 3)
    assert _llamacpp_error(spm_client.get("/slots"), 501)["type"] == "not_supported_error"


def test_cors_origins_list(spm_client):
    def preflight(origin):
        return spm_client.options("/completion", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})

    for allowed in ("http://localhost:5173", "http://127.0.0.1", "http://[::1]:3000", "https://editor.example"):
        r = preflight(allowed)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        assert r.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    for refused in ("http://localhost.evil.com", "https://evil.com", "http://notlocalhost"):
        r = preflight(refused)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = spm_client.get("/health", headers={"Origin": "https://evil.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
