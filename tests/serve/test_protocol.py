"""The shared request/result helpers, without a server: logit_bias, refused structured output, the
llama.cpp prompt shapes, CORS origins and the token-probability shapes."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest

from codegemma.models import resolve_model
from codegemma.serve import logprobs
from codegemma.serve.cors import OriginPolicy
from codegemma.serve.errors import APIError
from codegemma.serve.llamacpp_api import LlamaCompletionRequest, PromptObject, split_prompts
from codegemma.serve.openai_api import OpenAIChatRequest
from codegemma.serve.protocol import logit_bias, refuse_structured
from codegemma.tokenizer import Tokenizer

TokenLogprob = namedtuple("TokenLogprob", "token_id logprob top")  # the engine's fields


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(resolve_model("nano"))


def test_logit_bias_shapes(tok):
    assert logit_bias(None, tok) == () and logit_bias({}, tok) == ()
    assert logit_bias([[5, 1.5], [6, False]], tok) == ((5, 1.5), (6, -math.inf))
    assert logit_bias({"5": -100, "7": 2}, tok) == ((5, -100.0), (7, 2.0))  # OpenAI's JSON keys
    text_ids = tok.encode(" hello world", parse_special=False)
    assert dict(logit_bias([[" hello world", -1]], tok)) == {i: -1.0 for i in text_ids}
    for bad in ([[tok.vocab_size, 1]], {"x": "big"}, [[5]], "5", [[None, 1]], {"5": float("nan")}):
        with pytest.raises(APIError) as info:
            logit_bias(bad, tok)
        assert info.value.status == 400 and info.value.param == "logit_bias"


def test_structured_output_fields_are_refused():
    plain = OpenAIChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}],
                                              "response_format": {"type": "text"}})
    refuse_structured(plain)  # OpenAI's default asks for plain text: nothing to refuse
    for extra in ({"response_format": {"type": "json_object"}}, {"grammar": "root ::= x"}, {"json_schema": {}},
                  {"json_schema": {"type": "object"}}):
        req = OpenAIChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **extra})
        name = next(iter(extra))  # json_schema {} is "any JSON" in llama.cpp: refused too
        with pytest.raises(APIError) as info:
            refuse_structured(req)
        assert info.value.param == name and name in info.value.message


def test_llamacpp_prompt_shapes():
    def shapes(prompt):
        return split_prompts(LlamaCompletionRequest.model_validate({"prompt": prompt}).prompt)

    assert shapes("text") == ["text"]
    assert shapes([1, 2, 3]) == [[1, 2, 3]]  # one prompt of ids
    assert shapes([1, "a", 2]) == [[1, "a", 2]]  # one prompt, ids and text mixed
    assert shapes(["a", "b"]) == ["a", "b"]  # several prompts
    assert shapes([[1, 2], "b", {"prompt_string": "c"}]) == [[1, 2], "b", PromptObject(prompt_string="c")]
    for bad in ([], ["a"] * 17):
        with pytest.raises(APIError):
            shapes(bad)


def test_cors_origins():
    anyone = OriginPolicy("*")
    assert anyone.allows("https://evil.example") and anyone.allows("localhost")
    local = OriginPolicy("localhost, https://editor.example/")
    for ok in ("http://localhost", "http://localhost:8080", "https://127.0.0.1:3000", "http://[::1]",
               "https://editor.example"):
        assert local.allows(ok), ok
    for no in ("http://localhost.evil.com", "http://notlocalhost", "http://127.0.0.2", "https://editor.example.org"):
        assert not local.allows(no), no
    assert not OriginPolicy("none").allows("http://localhost")


def test_probability_shapes(tok):
    pieces = logprobs.Pieces(tok)
    ids = tok.encode("def f", parse_special=False)
    items = [TokenLogprob(i, -0.5, [(i, -0.5), (ids[0], -1.0), (3, -math.inf)]) for i in ids]
    lc = logprobs.llamacpp(items, pieces, 2)
    assert [e["id"] for e in lc] == ids and "".join(e["token"] for e in lc) == "def f"
    assert all(len(e["top_logprobs"]) == 2 and e["bytes"] for e in lc)
    post = logprobs.llamacpp(items, pieces, 3, post_sampling=True)
    assert all(len(e["top_probs"]) == 2 and e["prob"] == pytest.approx(math.exp(-0.5)) for e in post)  # p=0 left out
    oc = logprobs.openai_completion(items, pieces, 3, offset=4)
    assert "".join(oc["tokens"]) == "def f" and oc["text_offset"][0] == 4
    assert all(v >= -9999.0 for top in oc["top_logprobs"] for v in top.values())  # JSON has no -inf
    chat = logprobs.openai_chat(items, pieces, 1)
    assert chat["refusal"] is None and all(len(t["top_logprobs"]) == 1 for t in chat["content"])
    byte_id = tok.encode("媽", parse_special=False)[-1]
    assert pieces.piece(byte_id)[1] and all(0 <= b < 256 for b in pieces.piece(byte_id)[1])
