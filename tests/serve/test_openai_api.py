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
