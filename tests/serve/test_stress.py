"""Behaviour under stress: concurrent streams with disconnects, a full queue, the API key, /metrics."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest

from tests.serve.conftest import wait_idle

AUTH = {"Authorization": "Bearer sekrit"}


def _stream_request(i: int) -> tuple[str, dict]:
    """16 streams spread over the three protocol families."""
    kind = i % 3
    if kind == 0:
        return "/v1/completions", {"prompt": f"v{i} = ", "suffix": "\n", "max_tokens": 48, "temperature": 0,
                                   "stream": True}
    if kind == 1:
        return "/api/generate", {"model": "m", "prompt": f"w{i} = ", "suffix": "\n",
                                 "options": {"num_predict": 48, "temperature": 0}}
    return "/infill", {"input_prefix": f"z{i} = ", "input_suffix": "\n", "n_predict": 48, "temperature": 0,
                       "stream": True}


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def test_concurrent_streams_with_disconnects_leave_nothing_behind(server, client):
    before = client.get("/debug/slots").json()

    async def one(ac: httpx.AsyncClient, i: int) -> str:
        path, body = _stream_request(i)
        async with ac.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            lines = 0
            async for line in r.aiter_lines():
                lines += bool(line)
                if i % 2 == 0 and lines >= 2:
                    return "closed"  # leaving the block closes the connection mid-stream
        return "finished"

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as ac:
            return await asyncio.gather(*(one(ac, i) for i in range(16)))

    outcomes = asyncio.run(main())
    assert outcomes.count("closed") == 8 and outcomes.count("finished") == 8
    after = wait_idle(client)
    assert after["active_slots"] == 0 and after["queue_length"] == 0 and after["server_in_flight"] == 0
    assert after["requests_finished"] - before["requests_finished"] == 16
    assert after["requests_cancelled"] > before["requests_cancelled"]  # disconnects reached the engine
    # Memory: more rounds of the same load must not keep growing the server process.
    rss_before = _rss_mib(server.proc.pid)
    for _ in range(3):
        asyncio.run(main())
        wait_idle(client)
    assert _rss_mib(server.proc.pid) - rss_before < 32
    server.assert_alive()
    # And the server still answers normally.
    assert client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}).status_code == 200


def test_non_streaming_client_that_leaves_cancels_its_generation(server, client):
    before = client.get("/debug/slots").json()
    with pytest.raises(httpx.ReadTimeout):
        # repetition_penalty: greedy but never speculatively decoded (Engine(speculate=...)); the
        # client leaves after 0.1 s and the server polls every 0.2 s, well before 480 plain steps end.
        httpx.post(server.url + "/v1/completions", json={"prompt": "q = ", "max_tokens": 480, "temperature": 0,
                                                         "repetition_penalty": 1.05},
                   timeout=httpx.Timeout(60, read=0.1))
    after = wait_idle(client)
    assert after["server_in_flight"] == 0 and after["active_slots"] == 0
    assert after["requests_cancelled"] == before["requests_cancelled"] + 1


def test_metrics_are_prometheus_text(server, client):
    client.post("/infill", json={"input_prefix": "a", "input_suffix": "", "n_predict": 2})
    text = client.get("/metrics").text
    assert re.search(r'^codegemma_http_requests_total\{endpoint="/infill",status="200"\} \d', text, re.M)
    for name in ("codegemma_prompt_tokens_total", "codegemma_completion_tokens_total",
                 "codegemma_http_request_duration_seconds_bucket", "codegemma_prefix_cache_hits_total",
                 "codegemma_engine_queue_length", "codegemma_engine_active_slots"):
        assert re.search(rf"^{name}", text, re.M), name


def _llamacpp_metrics(client) -> tuple[dict, dict]:
    from prometheus_client.parser import text_string_to_metric_families

    r = client.get("/metrics")
    assert int(r.headers["Process-Start-Time-Unix"]) > 0  # llama-server's header
    # llama.cpp's literal lines (the parser below reads a counter without _total as if it had one)
    assert "# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max " in r.text
    kinds, values = {}, {}
    for family in text_string_to_metric_families(r.text):  # the whole page parses as Prometheus text
        for sample in family.samples:
            if sample.name.startswith("llamacpp:"):
                kinds[sample.name], values[sample.name] = family.type, sample.value
    return kinds, values


def test_llamacpp_metrics_under_llama_servers_names(client):
    """Dashboards written for llama-server read llamacpp:* (its README's list); they count what ran."""
    wait_idle(client)
    kinds, before = _llamacpp_metrics(client)
    counters = ["prompt_tokens_total", "prompt_seconds_total", "tokens_predicted_total",
                "tokens_predicted_seconds_total", "n_tokens_max_total", "n_decode_total",
                "spec_decode_num_draft_tokens_total", "spec_decode_num_accepted_tokens_total",
                "spec_decode_num_drafts_total"]
    gauges = ["prompt_tokens_seconds", "predicted_tokens_seconds", "requests_processing", "requests_deferred",
              "n_busy_slots_per_decode"]
    for name in counters + gauges:
        assert kinds[f"llamacpp:{name}"] == ("counter" if name in counters else "gauge"), name
    prompt = "def fibonacci(n):\n    " + "x = 1\n    " * 40  # new text: not in the prefix cache
    r = client.post("/completion", json={"prompt": prompt, "n_predict": 8, "ignore_eos": True, "temperature": 0})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 8
    wait_idle(client)
    _, after = _llamacpp_metrics(client)

    def grew(name):
        return after[f"llamacpp:{name}"] - before[f"llamacpp:{name}"]

    n_prompt = r.json()["tokens_evaluated"]
    assert grew("tokens_predicted_total") == 8
    assert grew("prompt_tokens_total") + grew("prompt_tokens_cached_total") == n_prompt
    assert grew("prompt_seconds_total") > 0 and grew("tokens_predicted_seconds_total") > 0
    assert after["llamacpp:n_tokens_max_total"] >= n_prompt + 8 and grew("n_decode_total") >= 1
    assert after["llamacpp:predicted_tokens_seconds"] > 0 and after["llamacpp:n_busy_slots_per_decode"] >= 1
    assert after["llamacpp:requests_processing"] == after["llamacpp:requests_deferred"] == 0


def test_full_queue_answers_429_with_retry_after(guarded_server):
    async def main():
        async with httpx.AsyncClient(base_url=guarded_server.url, timeout=120, headers=AUTH) as ac:
            body = {"prompt": "p = ", "max_tokens": 120, "temperature": 0}
            return await asyncio.gather(*(ac.post("/v1/completions", json=body) for _ in range(6)))

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_error"
    with httpx.Client(base_url=guarded_server.url, headers=AUTH) as c:
        assert wait_idle(c)["server_in_flight"] == 0


@pytest.mark.parametrize("path, method, shape", [
    ("/v1/models", "GET", "openai"), ("/api/tags", "GET", "ollama"), ("/infill", "POST", "llamacpp"),
    ("/metrics", "GET", "llamacpp"), ("/api/version", "GET", "ollama"), ("/chat/completions", "POST", "llamacpp"),
])
def test_api_key_is_required_except_on_health(guarded_server, path, method, shape):
    with httpx.Client(base_url=guarded_server.url, timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}, {"X-Api-Key": "wrong"}):
            r = c.request(method, path, headers=headers, json={"input_prefix": "", "input_suffix": ""})
            assert r.status_code == 401
            err = r.json()["error"]
            if shape == "openai":
                assert err["type"] == "authentication_error" and "param" in err
            elif shape == "ollama":
                assert isinstance(err, str)
            else:
                assert err["code"] == 401
        assert c.get("/health").status_code == 200
        body = {"input_prefix": "", "input_suffix": "", "n_predict": 0, "messages": [{"role": "user", "content": "x"}]}
        for headers in (AUTH, {"X-Api-Key": "sekrit"}):  # llama.cpp takes either header
            assert c.request(method, path, headers=headers, json=body).status_code == 200


def test_probes_playground_and_preflights_need_no_key(guarded_server):
    with httpx.Client(base_url=guarded_server.url, timeout=30) as c:
        assert c.head("/").status_code == 200  # the Ollama client's heartbeat
        assert c.get("/", headers={"Accept": "text/plain"}).text == "Ollama is running"
        assert c.get("/").text.startswith("<!doctype html>")  # the playground, as curl or a browser sees it
        # A browser's preflight carries no credentials: it is answered before the key is checked.
        pre = c.options("/infill", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "Authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert pre.headers["access-control-allow-credentials"] == "true"
        r = c.post("/infill", headers={**AUTH, "Origin": "http://localhost:3000"},
                   json={"input_prefix": "", "input_suffix": "", "n_predict": 0})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert c.post("/infill", headers={"Origin": "http://localhost:3000"}, json={}).status_code == 401


def test_openai_client_with_api_key(guarded_server):
    good = openai.OpenAI(base_url=guarded_server.url + "/v1", api_key="sekrit", max_retries=0)
    assert good.completions.create(model="m", prompt="a", max_tokens=2).choices[0].text is not None
    bad = openai.OpenAI(base_url=guarded_server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
