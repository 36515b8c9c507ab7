"""The Ollama routes through the official `ollama` Python client (and raw HTTP for shapes)."""

from __future__ import annotations

import json

import ollama
import pytest

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture()
def oll(server):
    return ollama.Client(host=server.url, timeout=60)


def test_generate_with_suffix(oll):
    r = oll.generate(model="codegemma:2b", prompt=PREFIX, suffix=SUFFIX, options=GREEDY)
    assert r.done and r.done_reason == "length" and r.response
    assert r.eval_count == 12 and r.prompt_eval_count > 10
    assert r.total_duration >= r.eval_duration >= 0  # nanoseconds
    plain = oll.generate(model="codegemma:2b", prompt=PREFIX, options=GREEDY)
    assert plain.prompt_eval_count < r.prompt_eval_count  # no suffix: the prompt runs verbatim


def test_streamed_generate_equals_the_plain_reply(oll):
    whole = oll.generate(model="m", prompt=PREFIX, suffix=SUFFIX, options=GREEDY).response
    parts = list(oll.generate(model="m", prompt=PREFIX, suffix=SUFFIX, options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == whole
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 12


def test_stream_is_ndjson_by_default(client):
    with client.stream("POST", "/api/generate", json={"model": "m", "prompt": PREFIX, "suffix": SUFFIX,
                                                      "options": GREEDY}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(ln) for ln in r.iter_lines() if ln]
    assert lines[-1]["done"] is True and "created_at" in lines[0]
    assert all(not ln["done"] for ln in lines[:-1])


def test_raw_prompt_skips_the_template(oll):
    from codegemma.fim.format import render_fim

    rendered = render_fim(PREFIX, SUFFIX)
    templated = oll.generate(model="m", prompt=PREFIX, suffix=SUFFIX, options=GREEDY).response
    assert oll.generate(model="m", prompt=rendered, raw=True, options=GREEDY).response == templated
    # Without a suffix the template passes the prompt verbatim too (pre-rendered FIM works).
    assert oll.generate(model="m", prompt=rendered, options=GREEDY).response == templated


def test_stop_option(oll):
    text = oll.generate(model="m", prompt=PREFIX, suffix=SUFFIX, options=GREEDY).response
    stop = text[4:6]
    r = oll.generate(model="m", prompt=PREFIX, suffix=SUFFIX, options={**GREEDY, "stop": [stop]})
    assert r.response == text[:text.index(stop)] and r.done_reason == "stop"


def test_chat_streamed_and_not(oll):
    messages = [{"role": "user", "content": "Write a function that adds two numbers."}]
    r = oll.chat(model="m", messages=messages, options={"temperature": 0, "num_predict": 8})
    assert r.message.role == "assistant" and r.message.content and r.done_reason == "length"
    parts = list(oll.chat(model="m", messages=messages, options={"temperature": 0, "num_predict": 8}, stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content
    assert parts[-1].done


def test_empty_prompt_loads_the_model(client):
    r = client.post("/api/generate", json={"model": "m"})
    assert r.status_code == 200 and r.json()["done_reason"] == "load" and r.json()["response"] == ""


def test_show_reports_a_fim_template_and_insert_capability(oll, client):
    from codegemma.fim.templates import ollama_template

    info = oll.show("codegemma:2b")
    assert info.template == ollama_template("psm")
    assert "insert" in info.capabilities and "completion" in info.capabilities
    # Continue sends `name` instead of `model`.
    r = client.post("/api/show", json={"name": "codegemma:2b"})
    assert r.status_code == 200 and r.json()["template"] == ollama_template("psm")
    assert 'stop "<|file_separator|>"' in r.json()["parameters"].splitlines()
    # the licence of the served model, as its directory states it: `codegemma init` states none
    assert r.json()["license"].startswith("unknown")


def test_an_spm_server_reports_and_runs_the_spm_template(spm_client):
    """What /api/show tells Ollama clients is the prompt the server then builds for them."""
    from codegemma.fim.templates import ollama_template

    show = spm_client.post("/api/show", json={"model": "m"}).json()
    assert show["template"] == ollama_template("spm")
    assert ollama_template("spm") in show["modelfile"]
    fim = spm_client.post("/api/generate", json={"model": "m", "prompt": PREFIX, "suffix": SUFFIX,
                                                 "stream": False, "options": GREEDY}).json()["response"]
    from codegemma.fim.format import render_fim

    raw = spm_client.post("/api/generate", json={"model": "m", "prompt": render_fim(PREFIX, SUFFIX, mode="spm"),
                                                 "raw": True, "stream": False, "options": GREEDY}).json()["response"]
    assert fim == raw


def test_tags_version_and_probe(oll, client):
    assert [m.model for m in oll.list().models] == ["codegemma-debug"]
    assert client.get("/api/version").json()["version"]
    r = client.get("/", headers={"Accept": "text/plain"})  # a browser gets the playground (test_playground.py)
    assert r.status_code == 200 and r.text == "Ollama is running"


@pytest.mark.parametrize("body, fragment", [
    ('{"prompt": "x"}', "model is required"),
    ('{"model": "m", "prompt": 3}', "prompt"),
    ('{"model": "m", "prompt": "x", "options": {"num_predict": "many"}}', "num_predict"),
    ('{"model": "m", "prompt": "x", "options": {"num_predict": -7}}', "num_predict"),
    ('{"model": "m", "prompt": "x", "stream": 1}', "stream"),
    ("{oops", "JSON"),
])
def test_bad_generate_requests_get_400_in_ollama_shape(client, body, fragment):
    r = client.post("/api/generate", content=body)
    assert r.status_code == 400
    assert list(r.json()) == ["error"] and isinstance(r.json()["error"], str)
    assert fragment in r.json()["error"]


def test_ollama_client_raises_response_error(oll):
    with pytest.raises(ollama.ResponseError) as info:
        oll.chat(model="m", messages=[{"role": "robot", "content": "x"}])
    assert info.value.status_code == 400


def test_unknown_api_route_is_404_in_ollama_shape(client):
    r = client.post("/api/pull", json={"model": "x"})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_num_ctx_bounds_the_prompt(oll):
    prefix = "".join(f"value_{i} = {i}\n" for i in range(300))
    r = oll.generate(model="m", prompt=prefix, suffix="\n", options={"num_ctx": 128, "num_predict": 8,
                                                                      "temperature": 0})
    assert r.prompt_eval_count + r.eval_count <= 128 and r.eval_count == 8
