"""codegemma.load(...) and its generate / complete / chat, all through the engine."""

from __future__ import annotations

import pytest

import codegemma
from codegemma.fim.format import render_chat, render_fim
from tests.infer.conftest import model_dir  # noqa: F401  (session fixture: tiny random model dir)


@pytest.fixture(scope="module")
def cg(model_dir):  # noqa: F811
    with codegemma.load(model_dir, device="cpu") as loaded:
        yield loaded


def test_load_needs_an_existing_model_dir(tmp_path):
    # load() with no path is the built-in model: tests/models/test_builtin_model.py
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        codegemma.load(tmp_path / "nope")


def test_generate_str_list_and_stream_agree(cg):
    one = cg.generate("def add(a, b):", max_new_tokens=12)
    assert isinstance(one, str) and one
    both = cg.generate(["def add(a, b):", "import os"], max_new_tokens=12)
    assert both[0] == one and len(both) == 2
    assert "".join(cg.generate("def add(a, b):", max_new_tokens=12, stream=True)) == one
    assert cg.model is cg.engine.model and cg.tokenizer.vocab_size == cg.config.vocab_size


def test_stopping_a_stream_early_cancels_the_request(cg):
    stream = cg.generate("def add(a, b):", max_new_tokens=200, stream=True)
    next(stream)
    stream.close()
    assert cg.engine.stats()["requests_cancelled"] >= 1


def test_complete_is_generate_on_the_fim_prompt(cg):
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    middle = cg.complete(prefix, suffix, path="add.py", context=[("util.py", "X = 1\n")], max_new_tokens=10)
    prompt = render_fim(prefix, suffix, path="add.py", context=[("util.py", "X = 1\n")])
    assert middle == cg.generate(prompt, max_new_tokens=10)
    assert cg.complete(prefix, suffix, mode="spm", max_new_tokens=10) == cg.generate(
        render_fim(prefix, suffix, mode="spm"), max_new_tokens=10)


def test_chat_uses_the_gemma_template(cg):
    messages = [{"role": "user", "content": "hello"}]
    answer = cg.chat(messages, max_new_tokens=8, temperature=0.7, seed=1)
    assert answer == cg.generate(render_chat(messages), max_new_tokens=8, temperature=0.7, seed=1)
    # The template starts with <bos>: it must not be doubled.
    assert cg.prompts.chat(messages).ids.count(cg.tokenizer.bos_id) == 1
    # Gemma has no system role: system text joins the first user turn, as the server does it
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert cg.prompts.chat(with_system).ids == cg.prompts.chat(
        [{"role": "user", "content": "Be brief.\n\nhello"}]).ids
    with pytest.raises(ValueError, match="alternate"):
        cg.chat([{"role": "assistant", "content": "x"}])


def test_a_long_file_completes_from_the_api_cut_around_the_cursor(cg, caplog):
    """The API fits a prompt as the server does: a file far longer than the context completes."""
    prefix = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(3000)) + "def g(y):\n    "
    suffix = "\n" + "".join(f"C{i} = {i}\n" for i in range(3000))
    assert len(cg.tokenizer.encode(prefix)) > cg.engine.max_seq_len
    with caplog.at_level("WARNING", logger="codegemma"):
        middle = cg.complete(prefix, suffix, max_new_tokens=8)
    assert isinstance(middle, str)
    assert "prompt cut to fit" in caplog.text and "tokens from the start of the prefix" in caplog.text
    prompt = cg.fim_prompt(prefix, suffix, max_new_tokens=8)
    assert prompt.truncated and len(prompt.ids) + prompt.max_new_tokens <= cg.engine.max_seq_len
    text = cg.prompts.render(prompt)
    assert "def g(y):\n    <|fim_suffix|>\nC0 = 0\n" in text  # the text nearest the cursor stays
    assert "def f0(" not in text and not text.endswith("C2999 = 2999\n<|fim_middle|>")
    assert cg.generate(prefix, max_new_tokens=4) is not None  # a long plain prompt keeps its end
