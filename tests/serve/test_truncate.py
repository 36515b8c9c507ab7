"""codegemma.fim.truncate: a FIM prompt cut to a token budget keeps the text nearest the cursor."""

from __future__ import annotations

import pytest

from codegemma.fim.format import FIM_MIDDLE, parse_fim, render_fim
from codegemma.fim.truncate import fit_fim, fit_text, keep_head, keep_tail
from codegemma.tokenizer import Tokenizer

PREFIX = "".join(f"def before_{i}(x):\n    return x * {i}\n\n" for i in range(60))
SUFFIX = "".join(f"def after_{i}(y):\n    return y + {i}\n\n" for i in range(60))


@pytest.fixture(scope="module")
def tok(model_dir):
    return Tokenizer.load(model_dir)


def n_tokens(tok, text):
    return len(tok.encode(text))


def test_short_prompt_is_rendered_unchanged(tok):
    fitted = fit_fim(tok, "def f(", "):\n", 500, path="a.py", context=[("b.py", "x = 1\n")])
    assert not fitted.truncated
    assert fitted.text == render_fim("def f(", "):\n", path="a.py", context=[("b.py", "x = 1\n")])
    assert fitted.ids == tok.encode(fitted.text)


def test_keep_tail_and_head_are_substrings(tok):
    tail, head = keep_tail(tok, PREFIX, 20), keep_head(tok, SUFFIX, 20)
    assert PREFIX.endswith(tail) and 0 < len(tail) < len(PREFIX)
    assert SUFFIX.startswith(head) and 0 < len(head) < len(SUFFIX)
    assert abs(n_tokens(tok, tail) - 20) <= 2 and abs(n_tokens(tok, head) - 20) <= 2


def test_long_prefix_and_suffix_keep_the_text_around_the_cursor(tok):
    budget = 200
    fitted = fit_fim(tok, PREFIX, SUFFIX, budget)
    assert fitted.truncated
    assert len(fitted.ids) <= budget and fitted.ids == tok.encode(fitted.text)
    parts = parse_fim(fitted.text)
    assert PREFIX.endswith(parts["prefix"]) and SUFFIX.startswith(parts["suffix"])
    assert parts["prefix"] and parts["suffix"]
    # llama.cpp's split: about 3/4 of the room for the prefix, 1/4 for the suffix.
    n_pre, n_suf = n_tokens(tok, parts["prefix"]), n_tokens(tok, parts["suffix"])
    assert 2.3 < n_pre / n_suf < 3.7, (n_pre, n_suf)
    assert n_pre + n_suf > budget - 10  # the room is used, not wasted


def test_a_short_side_gives_its_share_to_the_other(tok):
    fitted = fit_fim(tok, PREFIX, "\n", 200)
    parts = parse_fim(fitted.text)
    assert parts["suffix"] == "\n"
    assert n_tokens(tok, parts["prefix"]) > 180
    fitted = fit_fim(tok, "x = ", SUFFIX, 200)
    parts = parse_fim(fitted.text)
    assert parts["prefix"] == "x = " and n_tokens(tok, parts["suffix"]) > 180


def test_context_files_fill_what_is_left_nearest_first(tok):
    files = [(f"mod{i}.py", f"VALUE_{i} = {i}\n" * 8) for i in range(6)]
    roomy = fit_fim(tok, "a = ", "\n", 2000, context=files)
    assert not roomy.truncated and roomy.dropped_files == 0
    one_file = n_tokens(tok, render_fim("", "", context=files[:1])) - n_tokens(tok, render_fim("", ""))
    budget = n_tokens(tok, render_fim("a = ", "\n")) + 2 * one_file + 5
    fitted = fit_fim(tok, "a = ", "\n", budget, context=files)
    assert fitted.truncated and len(fitted.ids) <= budget
    parts = parse_fim(fitted.text)
    paths = [p for p, _ in parts["context"]]
    assert paths[-2:] == ["mod4.py", "mod5.py"]  # the last files (next to the current one) stay
    assert "mod0.py" not in paths
    assert parts["prefix"] == "a = " and parts["suffix"] == "\n"  # the current file wins
    assert fitted.dropped_files >= 3


def test_middle_text_is_kept_after_the_middle_token(tok):
    fitted = fit_fim(tok, PREFIX, SUFFIX, 120, middle="    return ")
    assert fitted.text.endswith(FIM_MIDDLE + "    return ") and len(fitted.ids) <= 120


def test_fixed_part_larger_than_budget_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="fixed part"):
        fit_fim(tok, "a", "b", 10, middle="x" * 200)


def test_prerendered_psm_prompt_is_cut_like_a_structured_one(tok):
    text = render_fim(PREFIX, SUFFIX, path="big.py")
    fitted = fit_text(tok, text, 150)
    assert fitted.truncated and len(fitted.ids) <= 150
    parts = parse_fim(fitted.text)
    assert parts["path"] == "big.py"
    assert PREFIX.endswith(parts["prefix"]) and SUFFIX.startswith(parts["suffix"])
    assert fitted.text.endswith(FIM_MIDDLE)


def test_plain_text_keeps_its_end(tok):
    fitted = fit_text(tok, PREFIX, 50)
    assert fitted.truncated and len(fitted.ids) == 50
    assert fitted.ids == tok.encode(PREFIX)[-50:]
