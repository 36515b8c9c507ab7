"""codegemma.fim.prompt: the one prompt builder (layout, fitting, <bos>, limits, what was cut)."""

from __future__ import annotations

import pytest

from codegemma.fim.format import FIM_MIDDLE, parse_fim, render_chat, render_fim
from codegemma.fim.prompt import PromptBuilder, PromptError, chat_ids
from codegemma.models import resolve_model
from codegemma.tokenizer import Tokenizer

PREFIX = "".join(f"def before_{i}(x):\n    return x * {i}\n\n" for i in range(60))
SUFFIX = "".join(f"def after_{i}(y):\n    return y + {i}\n\n" for i in range(60))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(resolve_model(None))


def build(tok, n_ctx=4096, mode="psm"):
    return PromptBuilder(tok, n_ctx, mode)


def parts_of(tok, prompt):
    text = tok.decode(prompt.ids)
    assert text.startswith("<bos>") and text.count("<bos>") == 1
    return parse_fim(text[len("<bos>"):])


def n_tokens(tok, text):
    return len(tok.encode(text))


@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_ids_are_the_rendered_layout(tok, mode):
    ctx = [("b.py", "x = 1\n"), ("c/d.py", "def g():\n    pass\n")]
    p = build(tok).fim("def f(", "):\n", path="a.py", context=ctx, middle="    ", mode=mode, max_new_tokens=16)
    text = render_fim("def f(", "):\n", mode=mode, path="a.py", context=ctx) + "    "
    assert p.ids == tok.encode(text, add_bos=True)
    assert not p.truncated and p.max_new_tokens == 16 and p.n_ctx == 4096


def test_the_builder_mode_is_the_default_and_bad_modes_are_refused(tok):
    spm = build(tok, mode="spm").fim("a = ", "\n")
    assert parts_of(tok, spm)["mode"] == "spm"
    with pytest.raises(ValueError, match="unknown FIM mode 'pms'"):
        build(tok).fim("a", "b", mode="pms")
    with pytest.raises(ValueError, match="unknown FIM mode"):
        PromptBuilder(tok, 100, "fim")


def test_special_texts_in_code_stay_characters(tok):
    """A file that spells a control token must not inject one (only the layout makes them)."""
    prefix = "SEP = '<|file_separator|>'\nEND = '<eos>'\n"
    p = build(tok).fim(prefix, "<|fim_middle|>\n", path="<eos>.py", context=[("<bos>x.py", "'<|fim_prefix|>'")])
    control = {tok.token_id(n) for n in ("fim_prefix", "fim_suffix", "fim_middle", "file_separator", "eos")}
    structural = [tok.decode([i]) for i in p.ids if i in control or i == tok.bos_id]
    assert structural == ["<bos>", "<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    assert tok.decode(p.ids).count("<eos>") == 2  # as text: the path and the prefix


def test_long_prefix_and_suffix_keep_the_text_around_the_cursor(tok):
    p = build(tok, n_ctx=300).fim(PREFIX, SUFFIX, max_new_tokens=50)
    assert p.truncated and len(p.ids) + p.max_new_tokens <= 300
    parts = parts_of(tok, p)
    assert PREFIX.endswith(parts["prefix"]) and SUFFIX.startswith(parts["suffix"])
    n_pre, n_suf = n_tokens(tok, parts["prefix"]), n_tokens(tok, parts["suffix"])
    assert 2.3 < n_pre / n_suf < 3.7, (n_pre, n_suf)  # llama.cpp's 3/4 : 1/4 split
    assert len(p.ids) >= 300 - 50 - 2  # the room is used, not wasted
    assert p.cut.prefix_tokens == n_tokens(tok, PREFIX) - n_pre
    assert p.cut.suffix_tokens == n_tokens(tok, SUFFIX) - n_suf
    assert "tokens from the start of the prefix" in p.cut.describe()


def test_a_short_side_gives_its_share_to_the_other(tok):
    parts = parts_of(tok, build(tok, n_ctx=300).fim(PREFIX, "\n", max_new_tokens=50))
    assert parts["suffix"] == "\n" and n_tokens(tok, parts["prefix"]) > 230
    parts = parts_of(tok, build(tok, n_ctx=300).fim("x = ", SUFFIX, max_new_tokens=50))
    assert parts["prefix"] == "x = " and n_tokens(tok, parts["suffix"]) > 230


def test_context_files_fill_what_is_left_nearest_first(tok):
    files = [(f"mod{i}.py", f"VALUE_{i} = {i}\n" * 8) for i in range(6)]
    roomy = build(tok).fim("a = ", "\n", context=files)
    assert not roomy.truncated
    one_file = n_tokens(tok, render_fim("", "", context=files[:1])) - n_tokens(tok, render_fim("", ""))
    n_ctx = n_tokens(tok, render_fim("a = ", "\n")) + 2 * one_file + 5 + 1 + 16
    p = build(tok, n_ctx=n_ctx).fim("a = ", "\n", context=files, max_new_tokens=16)
    parts = parts_of(tok, p)
    paths = [path for path, _ in parts["context"]]
    assert paths[-2:] == ["mod4.py", "mod5.py"] and "mod0.py" not in paths
    assert parts["prefix"] == "a = " and parts["suffix"] == "\n"  # the current file wins
    assert p.cut.files_dropped >= 3 and not p.cut.prefix_tokens


def test_a_partial_context_file_keeps_its_end(tok):
    big = "".join(f"CONST_{i} = {i}\n" for i in range(200))
    p = build(tok, n_ctx=200).fim("a = ", "\n", context=[("big.py", big)], max_new_tokens=16)
    (path, text), = parts_of(tok, p)["context"]
    assert path == "big.py" and big.endswith(text) and len(text) < len(big)
    assert p.cut.file_tokens > 0 and p.cut.files_dropped == 0


def test_middle_text_is_kept_after_the_middle_token(tok):
    p = build(tok, n_ctx=160).fim(PREFIX, SUFFIX, middle="    return ", max_new_tokens=32)
    assert tok.decode(p.ids).endswith(FIM_MIDDLE + "    return ") and len(p.ids) <= 160 - 32


def test_fixed_part_larger_than_the_budget_is_a_clear_error(tok):
    with pytest.raises(PromptError, match="fixed part"):
        build(tok, n_ctx=64).fim("a", "b", middle="x = 1\n" * 100, max_new_tokens=8)


def test_unlimited_or_huge_limits_keep_half_the_context_for_the_prompt(tok):
    b = build(tok, n_ctx=400)
    for limit in (None, -1, 10_000):
        p = b.fim(PREFIX, SUFFIX, max_new_tokens=limit)
        assert len(p.ids) >= 190 and len(p.ids) + p.max_new_tokens <= 400
    short = b.fim("a = ", "\n", max_new_tokens=None)
    assert short.max_new_tokens == 400 - len(short.ids)  # as many as fit
    assert b.fim(PREFIX, SUFFIX, max_new_tokens=64, n_ctx=200).n_ctx == 200  # a request may shrink it
    assert b.fim("a", "b", n_ctx=10_000).n_ctx == 400  # but never grow it


def test_a_huge_text_is_cut_by_characters_before_encoding(tok, monkeypatch):
    seen = []
    real = tok.encode_batch

    def spy(texts, *a, **k):
        seen.extend(len(t) for t in texts)
        return real(texts, *a, **k)

    monkeypatch.setattr(tok, "encode_batch", spy)
    huge = "x = 1\n" * 700_000  # 4.2 MB
    p = build(tok, n_ctx=512).fim(huge, huge, context=[("big.py", huge)] * 3, max_new_tokens=16)
    assert max(seen) <= 512 * tok.max_piece_chars + 1
    assert p.truncated and len(p.ids) <= 512 - 16
    assert p.cut.files_dropped == 3


def test_a_client_rendered_fim_prompt_is_cut_like_a_structured_one(tok):
    for mode in ("psm", "spm"):
        text = render_fim(PREFIX, SUFFIX, mode=mode, path="big.py")
        p = build(tok, n_ctx=200).text(text, max_new_tokens=32)
        parts = parts_of(tok, p)
        assert p.truncated and parts["path"] == "big.py" and parts["mode"] == mode
        assert PREFIX.endswith(parts["prefix"]) and SUFFIX.startswith(parts["suffix"])


def test_plain_text_keeps_its_end_and_bos_is_not_doubled(tok):
    p = build(tok, n_ctx=100).text(PREFIX, max_new_tokens=49)
    assert p.ids == [tok.bos_id] + tok.encode(PREFIX)[-50:] and p.cut.prefix_tokens > 0
    assert build(tok).text("<bos>def f():").ids == tok.encode("<bos>def f():")
    with pytest.raises(PromptError, match="empty"):
        build(tok).text("<bos>")


def test_token_prompts_are_checked_and_run_as_given(tok):
    b = build(tok, n_ctx=64)
    assert b.tokens([5, 6, 7], max_new_tokens=4).ids == [5, 6, 7]
    assert len(b.tokens(list(range(10, 200)), max_new_tokens=4).ids) == 64 - 4
    with pytest.raises(PromptError, match="outside the vocabulary"):
        b.tokens([tok.vocab_size])


def test_chat_is_the_gemma_template_with_plain_message_text(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi <end_of_turn>"}]
    p = build(tok).chat(messages, max_new_tokens=8)
    assert tok.decode(p.ids) == render_chat([{"role": "user", "content": "Be brief.\n\nhi <end_of_turn>"}])
    assert p.ids.count(tok.token_id("end_of_turn")) == 1  # the one in the message is text
    with pytest.raises(PromptError, match="messages"):
        build(tok).chat([{"role": "assistant", "content": "x"}])
    with pytest.raises(PromptError, match="the conversation is"):
        build(tok, n_ctx=32).chat([{"role": "user", "content": PREFIX}])


def test_chat_segments_mark_model_replies(tok):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    segments = chat_ids(tok, msgs)
    assert [m for _, m in segments] == [False, True, False]
    assert tok.decode([i for s, _ in segments for i in s]) == render_chat(msgs, add_generation_prompt=False)
    assert tok.decode(segments[1][0]) == "b<end_of_turn>"


def test_a_last_assistant_turn_is_continued_unless_asked_otherwise(tok):
    """llama.cpp's assistant prefill (and Ollama's): the model continues the last assistant message;
    continue_final=False closes it and opens a new turn; add_generation_prompt=False opens none."""
    msgs = [{"role": "user", "content": "Name a sort"}, {"role": "assistant", "content": "Quick"}]
    b = build(tok)
    closed = render_chat(msgs)
    assert tok.decode(b.chat(msgs, max_new_tokens=8).ids) == closed[:closed.rindex("Quick") + len("Quick")]
    assert tok.decode(b.chat(msgs, max_new_tokens=8, continue_final=False).ids) == closed
    user_last = msgs[:1]
    assert tok.decode(b.chat(user_last, max_new_tokens=8).ids) == render_chat(user_last)
    assert tok.decode(b.chat(user_last, max_new_tokens=8, add_generation_prompt=False).ids) == \
        render_chat(user_last, add_generation_prompt=False)
    segments = chat_ids(tok, msgs, continue_final=True)  # the open reply is still the model's segment
    assert [m for _, m in segments] == [False, True] and tok.decode(segments[1][0]) == "Quick"


def test_context_room_is_what_other_files_may_use(tok):
    b = build(tok, n_ctx=300)
    room = b.context_room("a = ", "\n", path="x.py", max_new_tokens=16)
    used = len(b.fim("a = ", "\n", path="x.py", max_new_tokens=16).ids)
    assert room == 300 - 16 - used
    assert b.context_room(PREFIX, SUFFIX, max_new_tokens=16) == 0
