import pytest

from codegemma.fim.format import (STOP_TEXTS, cut_at_stop, parse_fim, render_chat,
                                  render_fim, stop_token_ids)
from codegemma.tokenizer import Tokenizer

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def test_psm_golden_string():
    assert render_fim(PREFIX, SUFFIX) == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>")
    assert render_fim(PREFIX, SUFFIX, path="src/math.py") == (
        "src/math.py\n<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>")
    assert render_fim("", "") == "<|fim_prefix|><|fim_suffix|><|fim_middle|>"


def test_spm_golden_string():
    assert render_fim(PREFIX, SUFFIX, mode="spm", middle="return a + b") == (
        "<|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_prefix|>def add(a, b):\n    <|fim_middle|>return a + b")
    with pytest.raises(ValueError, match="unknown FIM mode"):
        render_fim("a", "b", mode="pms")


def test_multi_file_golden_string():
    prompt = render_fim(PREFIX, SUFFIX, path="app.py", context=[("util.py", "X = 1\n"), ("b/c.py", "Y = 2")])
    assert prompt == ("util.py\nX = 1\n<|file_separator|>b/c.py\nY = 2<|file_separator|>"
                      "app.py\n<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>")


def test_golden_token_ids(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    ids = tok.encode(render_fim(PREFIX, SUFFIX), add_bos=True)
    p, s = tok.encode(PREFIX), tok.encode(SUFFIX)
    assert ids == [2, 67, *p, 69, *s, 68]
    spm = tok.encode(render_fim(PREFIX, SUFFIX, mode="spm"), add_bos=True)
    assert spm == [2, 69, *s, 67, *p, 68]
    multi = tok.encode(render_fim("x", "y", path="a.py", context=[("b.py", "z")]), add_bos=True)
    assert multi[0] == 2 and multi.count(70) == 1 and multi.index(70) < multi.index(67) < multi.index(69) < multi.index(68)
    chat = tok.encode(render_chat([{"role": "user", "content": "hi"}]))
    assert chat == [2, 106, *tok.encode("user\nhi"), 107, 108, 106, *tok.encode("model\n")]


def test_parse_inverts_render():
    example = render_fim("P\n", "S", path="x.py", context=[("c.py", "t")], middle="M")
    assert parse_fim(example) == {"mode": "psm", "path": "x.py", "context": [("c.py", "t")],
                                  "prefix": "P\n", "suffix": "S", "middle": "M"}
    spm = render_fim("P\n", "S", mode="spm", path="y.py", middle="M")
    assert parse_fim(spm) == {"mode": "spm", "path": "y.py", "context": [],
                              "prefix": "P\n", "suffix": "S", "middle": "M"}
    for bad in ("plain text", "<|fim_prefix|>P<|fim_middle|>M", "<|fim_suffix|>S<|fim_middle|>M"):
        with pytest.raises(ValueError, match="not a FIM prompt"):
            parse_fim(bad)


def test_chat_template_matches_gemma():
    msgs = [{"role": "user", "content": " Write hello world \n"}, {"role": "assistant", "content": "print('hi')"},
            {"role": "user", "content": "Thanks"}]
    assert render_chat(msgs) == (
        "<bos><start_of_turn>user\nWrite hello world<end_of_turn>\n<start_of_turn>model\nprint('hi')<end_of_turn>\n"
        "<start_of_turn>user\nThanks<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(ValueError, match="no system role"):
        render_chat([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="alternate"):
        render_chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_cut_at_the_first_stop():
    assert cut_at_stop("return x<|file_separator|>test.py\n") == ("return x", "<|file_separator|>")
    assert cut_at_stop("a<eos>b<|fim_prefix|>") == ("a", "<eos>")
    assert cut_at_stop("no stop here") == ("no stop here", None)
    assert cut_at_stop("x\ndef g():", extra_stops=["\ndef "]) == ("x", "\ndef ")
    assert len(STOP_TEXTS) == 6


def test_stop_token_ids(small_tokenizer_dir):
    assert sorted(stop_token_ids(Tokenizer.load(small_tokenizer_dir))) == [1, 67, 68, 69, 70, 107]
