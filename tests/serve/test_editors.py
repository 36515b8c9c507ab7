"""docs/editors.md, tried: every configuration snippet is parsed, and the requests its plugin sends
with those values (bodies as read in llama.vim, llama.vscode, Continue and Tabby source) go to a
real server; the replies are read the way each plugin reads them."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "editors.md"
DOC_URL = "http://127.0.0.1:8012"
PREFIX = "import os\n\n\ndef read(path):\n    "
SUFFIX = "\n\n\nprint(read('x'))\n"
CONTINUE_STOPS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>", "<end_of_turn>", "<eos>"]


def blocks(lang: str, marker: str) -> list[str]:
    found = re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)
    return [b for b in found if marker in b]


@pytest.fixture()
def local(server):
    """Replace the documented address with the test server's."""
    return lambda text: text.replace(DOC_URL, server.url)


def sse_data(r: httpx.Response) -> list:
    out = []
    for line in r.iter_lines():
        if line.startswith("data: "):
            out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


def test_llama_vim(local):
    (snippet,) = blocks("vim", "g:llama_config")
    cfg = dict(re.findall(r"'(\w+)':\s*'([^']*)'", snippet))
    cfg.update({k: int(v) for k, v in re.findall(r"'(\w+)':\s*(\d+)", snippet)})
    fim, inst = local(cfg["endpoint_fim"]), local(cfg["endpoint_inst"])
    extra = [{"text": "def helper():\n    return 42\n", "time": 0, "filename": "util.py"}]
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=120) as c:
        # ring-buffer warm-up (s:ring_update)
        warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "",
                "n_predict": 0, "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True,
                "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""]}
        assert c.post(fim, content=json.dumps(warm), headers=headers).json() == {}
        # the FIM request (llama#fim)
        body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": extra,
                "prompt": "    ", "n_predict": cfg["n_predict"], "stop": [], "n_indent": 4, "top_k": 40, "top_p": 0.90,
                "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True,
                "t_max_prompt_ms": 500, "t_max_predict_ms": cfg["t_max_predict_ms"],
                "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
                                    "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
                                    "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
                                    "tokens_cached"]}
        raw = c.post(fim, content=json.dumps(body), headers=headers).text
        # s:fim_on_response: a fast textual check before decoding
        assert re.match(r"^\s*{", raw) and re.search(r'"content"\s*:"', raw)
        reply = json.loads(raw)
        assert isinstance(reply["content"], str) and reply["tokens_cached"] > 0  # the warm-up was reused
        assert set(reply) == set(body["response_fields"])
        # the instruction warm-up (llama#inst) generates nothing; the request itself streams
        messages = [{"role": "system", "content": "You are a text-editing assistant."},
                    {"role": "user", "content": "INSTRUCTION: add a docstring"}]
        warm_inst = {"id_slot": 1, "messages": messages, "samplers": [], "n_predict": 0, "stream": False,
                     "cache_prompt": True, "response_fields": [""]}
        r = c.post(inst, content=json.dumps(warm_inst), headers=headers)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 0
        send = {"id_slot": 1, "messages": messages, "min_p": 0.1, "temperature": 0.1,
                "samplers": ["min_p", "temperature"], "stream": True, "cache_prompt": True, "max_tokens": 8}
        with c.stream("POST", inst, content=json.dumps(send), headers=headers) as r:
            events = sse_data(r)
        assert events[-1] == "[DONE]"
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        assert text and events[-2]["choices"][0]["finish_reason"] == "length"


def test_llama_vscode(local):
    (snippet,) = blocks("json", "llama-vscode.")
    cfg = {k.removeprefix("llama-vscode."): v for k, v in json.loads(local(snippet)).items()}
    infill = cfg["endpoint"].rstrip("/") + "/infill"
    chunks = [{"text": "LIMIT = 10\n", "time": 0, "filename": "consts.py"}]
    with httpx.Client(timeout=120) as c:
        warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": chunks, "prompt": "",
                "n_predict": 0, "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
        assert c.post(infill, json=warm).status_code == 200
        body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": chunks, "prompt": "",
                "n_predict": cfg["n_predict"], "n_cmpl": cfg["max_parallel_completions"], "top_k": 40, "top_p": 0.99,
                "stream": False, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "n_indent": 4,
                "t_max_prompt_ms": 500, "t_max_predict_ms": 500}
        alts = c.post(infill, json=body).json()
        assert isinstance(alts, list) and len(alts) == cfg["max_parallel_completions"]
        assert all(isinstance(a["content"], str) for a in alts)  # completion.ts reads compl.content
        chat = cfg["endpoint_chat"].rstrip("/") + "/v1/chat/completions"
        r = c.post(chat, json={"messages": [{"role": "user", "content": "hi"}], "stream": False, "temperature": 0.8,
                               "top_p": 0.95, "max_tokens": 4})
        assert r.json()["choices"][0]["message"]["role"] == "assistant"


def continue_models(local) -> dict:
    (snippet,) = blocks("yaml", "provider:")
    return {m["provider"]: m for m in yaml.safe_load(local(snippet))["models"]}


def test_continue_ollama_provider(local):
    import ollama

    m = continue_models(local)["ollama"]
    client = ollama.Client(host=m["apiBase"])
    assert ".Suffix" in client.show(m["model"]).template  # how Continue decides that FIM works
    parts = list(client.generate(model=m["model"], prompt=PREFIX, suffix=SUFFIX, stream=True, keep_alive=1800,
                                 options={"temperature": 0.01, "top_p": 0.95, "top_k": 40, "num_predict": 12,
                                          "stop": CONTINUE_STOPS, "num_ctx": 8096}))
    assert parts[-1].done and parts[-1].eval_count <= 12
    assert "".join(p.response for p in parts)


def test_continue_openai_provider(local):
    m = continue_models(local)["openai"]
    prompt = f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"  # Continue's codegemma template
    body = {"model": m["model"], "prompt": prompt, "stop": CONTINUE_STOPS, "max_tokens": 12, "temperature": 0.01,
            "stream": True}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", m["apiBase"] + "completions", json=body,
                      headers={"Authorization": f"Bearer {m['apiKey']}"}) as r:
            events = sse_data(r)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])


def test_continue_mistral_provider(local):
    m = continue_models(local)["mistral"]
    body = {"model": m["model"], "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "temperature": 0.01,
            "top_p": None, "frequency_penalty": None, "presence_penalty": None, "stop": CONTINUE_STOPS, "stream": True}
    headers = {"Content-Type": "application/json", "Accept": "application/json", "x-api-key": m["apiKey"],
               "Authorization": f"Bearer {m['apiKey']}"}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", m["apiBase"] + "fim/completions", content=json.dumps(body), headers=headers) as r:
            events = sse_data(r)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[:-1])


def tabby_models(local) -> dict:
    configs = [tomllib.loads(local(b))["model"]["completion"]["http"] for b in blocks("toml", "[model.completion.http]")]
    return {m["kind"]: m for m in configs}


def test_tabby_llamacpp_completion(local):
    m = tabby_models(local)["llama.cpp/completion"]
    prompt = m["prompt_template"].format(prefix=PREFIX, suffix=SUFFIX)
    body = {"seed": 0, "prompt": prompt, "n_predict": 12, "temperature": 0.1, "stream": True, "penalty_last_n": 0,
            "presence_penalty": 0.0}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", m["api_endpoint"] + "/completion", json=body) as r:
            events = sse_data(r)
    text = ""
    for e in events:  # CompletionResponseChunk {content: String, stop: bool}, read until stop
        assert isinstance(e["content"], str) and isinstance(e["stop"], bool)
        text += e["content"]
        if e["stop"]:
            break
    assert e is events[-1] and text


def test_tabby_mistral_completion(local):
    m = tabby_models(local)["mistral/completion"]
    body = {"prompt": PREFIX, "suffix": SUFFIX, "model": m["model_name"], "temperature": 0.1, "max_tokens": 12,
            "stream": True, "random_seed": 0}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", m["api_endpoint"] + "/v1/fim/completions", json=body,
                      headers={"Authorization": f"Bearer {m['api_key']}"}) as r:
            events = sse_data(r)
    text = ""
    for e in events:  # FIMResponseChunk: delta.content is a String; stop at the first finish_reason
        text += e["choices"][0]["delta"]["content"]
        if e["choices"][0]["finish_reason"] is not None:
            break
    assert text
