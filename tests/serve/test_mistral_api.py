"""Mistral's FIM route (POST /v1/fim/completions) with the bodies Continue's Mistral provider and
Tabby's mistral/completion send, read the way they read the replies."""

from __future__ import annotations

import json

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"


def test_fim_reply_is_the_infill_text(client):
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 10, "temperature": 0}
    r = client.post("/v1/fim/completions", json=body)
    assert r.status_code == 200
    reply = r.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "codestral-latest"
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    infill = client.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 10,
                                          "temperature": 0}).json()
    assert choice["message"]["content"] == infill["content"]
    assert reply["usage"]["completion_tokens"] == 10


def test_stream_as_continue_and_tabby_read_it(client):
    # Continue's body (core/llm/llms/OpenAI.ts _streamFim), with its headers
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 10, "temperature": 0,
            "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0, "stop": ["\n\n\n"], "stream": True}
    headers = {"x-api-key": "", "Authorization": "Bearer undefined", "Accept": "application/json"}
    with client.stream("POST", "/v1/fim/completions", json=body, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    # Tabby: every delta has a string `content`; it stops at the first finish_reason
    assert all(isinstance(c["choices"][0]["delta"]["content"], str) for c in chunks)
    text = ""
    for c in chunks:
        text += c["choices"][0]["delta"]["content"]
        if c["choices"][0]["finish_reason"] is not None:
            break
    assert c is chunks[-1] and c["usage"]["completion_tokens"] == 10
    whole = client.post("/v1/fim/completions", json={**body, "stream": False}).json()
    assert text == whole["choices"][0]["message"]["content"]


def test_tabby_body_with_random_seed(client):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "model": "codestral-latest", "temperature": 0.5, "max_tokens": 6,
            "stream": False, "random_seed": 7}
    a = client.post("/v1/fim/completions", json=body).json()["choices"][0]["message"]["content"]
    assert a == client.post("/v1/fim/completions", json=body).json()["choices"][0]["message"]["content"]


def test_bad_requests_get_400(client):
    r = client.post("/v1/fim/completions", json={"suffix": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = client.post("/v1/fim/completions", json={"prompt": "x", "response_format": {"type": "json_object"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
