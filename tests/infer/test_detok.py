"""Incremental detokenisation (UTF-8 safe) and stop-string matching."""

from __future__ import annotations

from codegemma.infer.detok import IncrementalDetokenizer, StopStrings
from codegemma.tokenizer import Tokenizer


def test_multibyte_characters_are_never_split(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    text = "x = '€ 💡 naïve'\nprint(x)  # ✓"
    ids = tok.encode(text)
    assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)  # byte-fallback pieces are in play
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_flush_releases_an_incomplete_tail(small_tokenizer_dir):
    tok = Tokenizer.load(small_tokenizer_dir)
    ids = tok.encode("a€")
    detok = IncrementalDetokenizer(tok)
    out = "".join(detok.add(i) for i in ids[:-1])
    assert out == "a"
    tail = detok.flush()
    assert tail and set(tail) == {"\ufffd"}  # the two bytes of three that did arrive


def test_stop_strings_find_and_holdback():
    stops = StopStrings(("\n\n", "END", "ab"))
    assert stops.find("xx\n\nyy", 0) == (2, "\n\n")
    assert stops.find("xxEND and ab", 3) == (2, "END")  # a match that began before new_from
    assert stops.find("xyz", 0) is None
    assert stops.holdback("foo\n") == 1
    assert stops.holdback("fooEN") == 2
    assert stops.holdback("fooa") == 1
    assert stops.holdback("foo") == 0
    assert not StopStrings(())
