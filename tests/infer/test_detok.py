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


def test_stream_equals_whole_decode_on_byte_runs(small_tokenizer_dir):
    """Random byte-fallback runs (valid, invalid, mixed with text) stream to exactly decode(ids)."""
    import random

    from codegemma.infer.detok import IncrementalDetokenizer
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    byte_ids = [tok.backend.token_to_id(f"<0x{b:02X}>") for b in range(256)]
    rng = random.Random(0)
    for _ in range(200):
        ids = []
        for _ in range(rng.randint(1, 12)):
            ids += rng.sample(byte_ids, rng.randint(1, 4)) if rng.random() < 0.5 else \
                [rng.randrange(109 + 256, tok.vocab_size)]
            if rng.random() < 0.2:
                ids += tok.encode("é€😀")
        d = IncrementalDetokenizer(tok)
        text = "".join(d.add(i) for i in ids) + d.flush()
        assert text == tok.decode(ids), ids
