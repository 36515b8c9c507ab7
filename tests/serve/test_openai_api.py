"""The OpenAI routes through the official `openai` Python client (and raw HTTP for error shapes)."""

from __future__ import annotations

import json

import openai
import pytest

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"


@pytest.fixture()
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_fim_completion_with_suffix(oai):
    r = oai.completions.create(model="codegemma-debug", prompt=PREFIX, suffix=SUFFIX, max_tokens=12,
                               temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "length"
    assert r.choices[0].text  # the test model never stops on its own: 12 tokens of text
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12
    # A suffix makes it a FIM prompt: the same text without a suffix is a different prompt.
    plain = oai.completions.create(model="x", prompt=PREFIX, max_tokens=12, temperature=0)
    assert plain.usage.prompt_tokens < r.usage.prompt_tokens


def test_streamed_fim_equals_the_plain_reply(oai):
    args = dict(model="any-name", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, temperature=0)
    whole = oai.completions.create(**args).choices[0].text
    chunks = list(oai.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_stream_ends_with_done(client):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_prompt_list_and_n_give_one_choice_each(oai):
    r = oai.completions.create(model="m", prompt=["x = ", "import os\n"], max_tokens=3, temperature=0, n=2)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    by_index = {c.index: c.text for c in r.choices}
    assert by_index[0] == by_index[1] and by_index[2] == by_index[3]  # greedy: n copies agree
    single = oai.completions.create(model="m", prompt="import os\n", max_tokens=3, temperature=0)
    assert by_index[2] == single.choices[0].text


def test_stop_string_cuts_the_text(oai):
    full = oai.completions.create(model="m", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0)
    text = full.choices[0].text
    stop = text[3:5]
    cut = oai.completions.create(model="m", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0,
                                 stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(oai):
    args = dict(model="m", prompt=PREFIX, suffix=SUFFIX, max_tokens=10, temperature=1.0, seed=42)
    assert oai.completions.create(**args).choices[0].text == oai.completions.create(**args).choices[0].text


def test_chat_and_streamed_chat(oai):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write add()."}]
    r = oai.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.usage.completion_tokens == 8
    chunks = list(oai.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0,
                                              stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_models_list(oai):
    models = oai.models.list()
    assert [m.id for m in models.data] == ["codegemma-debug"]


def _openai_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param:
        assert err["param"] == param
    return err


@pytest.mark.parametrize("body, param", [
    ('{"prompt": "x", "max_tokens": -3}', "max_tokens"),
    ('{"prompt": 12}', "prompt"),
    ('{"prompt": "x", "temperature": "hot"}', "temperature"),
    ('{"prompt": "x", "stream": "yes"}', "stream"),
    ('{"max_tokens": 5}', "prompt"),
    ('{"prompt": "x", "n": 0}', "n"),
    ('{"prompt": "x", "logprobs": 6}', "logprobs"),
    ('{"prompt": "x", "response_format": {"type": "json_object"}}', "response_format"),
    ('{"prompt": "x", "logit_bias": {"not a token id or text": "big"}}', "logit_bias"),
])
def test_bad_completion_requests_get_400_in_openai_shape(client, body, param):
    err = _openai_error(client.post("/v1/completions", content=body), 400, param)
    assert err["type"] == "invalid_request_error"


def test_malformed_json_and_wrong_body_type(client):
    assert "JSON" in _openai_error(client.post("/v1/completions", content="{not json"), 400)["message"]
    assert "object" in _openai_error(client.post("/v1/completions", content="[1, 2]"), 400)["message"]
    _openai_error(client.post("/v1/chat/completions", content='{"messages": []}'), 400, "messages")
    _openai_error(client.post("/v1/chat/completions",
                              content='{"messages": [{"role": "wizard", "content": "x"}]}'), 400)


def test_openai_client_raises_bad_request(oai):
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model="m", prompt="x", max_tokens=-1)


def test_huge_max_tokens_is_capped_to_the_context(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    r = client.post("/v1/completions", json={"prompt": "x = ", "max_tokens": 10**9, "temperature": 0})
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["total_tokens"] <= MAX_SEQ_LEN and r.json()["choices"][0]["finish_reason"] == "length"


def test_unknown_route_is_404_in_openai_shape(client):
    _openai_error(client.post("/v1/engines", json={}), 404)


def test_streamed_choices_carry_their_index(client):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 6, "temperature": 0, "n": 2, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        chunks = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    texts = {0: "", 1: ""}
    finished = []
    for c in chunks:
        choice = c["choices"][0]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finished.append(choice["index"])
    assert sorted(finished) == [0, 1] and texts[0] == texts[1] and texts[0]


def test_replies_carry_fingerprint_cached_tokens_and_timings(client):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4, "temperature": 0}
    first = client.post("/v1/completions", json=body).json()
    again = client.post("/v1/completions", json=body).json()
    assert first["system_fingerprint"].startswith("b") and again["system_fingerprint"] == first["system_fingerprint"]
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached <= again["usage"]["prompt_tokens"]  # the same prompt again: its prefix is reused
    assert again["timings"]["cache_n"] == cached


def test_first_chat_delta_is_role_with_null_content_and_the_last_is_empty(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1 and all(c["system_fingerprint"] for c in chunks)


def test_a_last_assistant_message_is_continued_as_llamacpp_and_vllm_do(client, oai):
    """llama.cpp prefills a last assistant message (the model continues it); vLLM's
    continue_final_message / add_generation_prompt choose explicitly; both true is a 400."""
    msgs = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"},
            {"role": "assistant", "content": "Whill"}]
    prompt = client.post("/apply-template", json={"messages": msgs}).json()["prompt"]
    assert prompt.endswith("<start_of_turn>model\nWhill"), prompt

    def prompt_tokens(**extra):
        r = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 2, "temperature": 0, **extra})
        assert r.status_code == 200, r.text[:300]
        return r.json()["usage"]["prompt_tokens"]

    open_ = prompt_tokens()
    assert prompt_tokens(continue_final_message=True, add_generation_prompt=False) == open_
    # closed: <end_of_turn>, a newline and a new "<start_of_turn>model\n" more
    assert prompt_tokens(continue_final_message=False) >= open_ + 4
    r = oai.chat.completions.create(model="m", messages=msgs, max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens == open_
    for extra, last in (({"continue_final_message": True, "add_generation_prompt": True}, msgs),
                        ({"continue_final_message": True}, msgs[:2])):
        r = client.post("/v1/chat/completions", json={"messages": last, "max_tokens": 2, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == "continue_final_message", r.text[:300]


def test_verbose_shows_the_prompt_the_server_built(client):
    """llama.cpp's per-request `verbose`: "__verbose" holds the result in llama.cpp's shape with the
    exact prompt (here the chat template, the system text folded into the user turn)."""
    body = {"messages": [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}],
            "max_tokens": 3, "temperature": 0}
    r = client.post("/v1/chat/completions", json={**body, "verbose": True}).json()
    v = r["__verbose"]
    assert v["prompt"] == "<bos><start_of_turn>user\nBook\n\nWhat is the best book<end_of_turn>\n<start_of_turn>model\n"
    assert v["content"] == r["choices"][0]["message"]["content"] and v["tokens_predicted"] == 3
    assert v["tokens_evaluated"] == r["usage"]["prompt_tokens"]
    assert "__verbose" not in client.post("/v1/chat/completions", json=body).json()
    r = client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 2, "verbose": True}).json()
    assert r["__verbose"]["prompt"] == "<bos>def f(x):" and r["__verbose"]["content"] == r["choices"][0]["text"]


def test_bare_routes_as_llamacpp_serves_them(server):
    bare = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    r = bare.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                     temperature=0)
    assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens == 3
    assert [m.id for m in bare.models.list().data] == ["codegemma-debug"]


def test_n_predict_wins_over_max_tokens(client):
    r = client.post("/v1/completions", json={"prompt": "x = ", "max_tokens": 9, "n_predict": 2, "temperature": 0})
    assert r.json()["usage"]["completion_tokens"] == 2


def test_overflowing_conversation_gets_the_overflow_error(client):
    from tests.serve.conftest import MAX_SEQ_LEN

    messages = [{"role": "user", "content": "What is the best book? " * 20}] * 10
    r = client.post("/v1/chat/completions", json={"messages": messages})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "exceed_context_size_error" and err["n_ctx"] == MAX_SEQ_LEN
    assert err["n_prompt_tokens"] > MAX_SEQ_LEN
    bare = client.post("/chat/completions", json={"messages": messages}).json()["error"]
    assert bare["code"] == 400 and bare["type"] == "exceed_context_size_error"  # llama.cpp's shape


@pytest.mark.parametrize("extra", [{"response_format": {"type": "json_object"}},
                                   {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
                                   {"grammar": 'root ::= "a"'}, {"json_schema": {"const": "42"}}])
def test_structured_output_is_refused(client, extra):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    err = _openai_error(client.post("/v1/chat/completions", json=body), 400, next(iter(extra)))
    assert "structured output" in err["message"]
    plain = client.post("/v1/chat/completions", json={**body, **{k: None for k in extra},
                                                      "response_format": {"type": "text"}})
    assert plain.status_code == 200  # {"type": "text"} asks for what the server does


def test_logprobs_on_completions_and_chat(oai):
    r = oai.completions.create(model="m", prompt=PREFIX, suffix=SUFFIX, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.top_logprobs) == 4
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    messages = [{"role": "user", "content": "hi"}]
    c = oai.chat.completions.create(model="m", messages=messages, max_tokens=4, temperature=0, logprobs=True,
                                    top_logprobs=3)
    content = c.choices[0].logprobs.content
    text = c.choices[0].message.content
    # Token by token, or (random weights) a run of byte tokens that is not UTF-8: the reply's text then
    # holds one U+FFFD per byte, as Hugging Face's byte-fallback decoder writes it, and the bytes say what came.
    assert "".join(t.token for t in content) == text or (
        text == "\ufffd" * len(text) and sum(len(t.bytes) for t in content) >= len(text))
    assert all(len(t.top_logprobs) == 3 and t.bytes is not None for t in content)
    streamed = oai.chat.completions.create(model="m", messages=messages, max_tokens=4, temperature=0, logprobs=True,
                                           top_logprobs=3, stream=True)
    tokens = [t.token for ch in streamed if ch.choices and ch.choices[0].logprobs
              for t in ch.choices[0].logprobs.content]
    assert tokens == [t.token for t in content]


def test_logit_bias_by_token_id(client):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 3, "temperature": 0}
    text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    first = client.post("/tokenize", json={"content": text, "parse_special": False}).json()["tokens"][0]
    biased = client.post("/v1/completions", json={**body, "logit_bias": {str(first): -100}}).json()
    assert not biased["choices"][0]["text"].startswith(text)
