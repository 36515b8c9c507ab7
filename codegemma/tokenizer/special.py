"""The one table of Gemma's special tokens: name -> text -> id. Nothing else in the project
hard-codes a special-token id; code asks a loaded tokenizer for the id of a text from here."""

from __future__ import annotations

from typing import NamedTuple


class SpecialToken(NamedTuple):
    name: str
    text: str
    gemma_id: int  # where Gemma's (and our small tokenizers') vocabulary puts it


SPECIAL_TOKENS: dict[str, SpecialToken] = {t.name: t for t in (
    SpecialToken("pad", "<pad>", 0),
    SpecialToken("eos", "<eos>", 1),
    SpecialToken("bos", "<bos>", 2),
    SpecialToken("unk", "<unk>", 3),
    SpecialToken("mask", "<mask>", 4),
    SpecialToken("fim_prefix", "<|fim_prefix|>", 67),
    SpecialToken("fim_middle", "<|fim_middle|>", 68),
    SpecialToken("fim_suffix", "<|fim_suffix|>", 69),
    SpecialToken("file_separator", "<|file_separator|>", 70),
    SpecialToken("start_of_turn", "<start_of_turn>", 106),
    SpecialToken("end_of_turn", "<end_of_turn>", 107),
)}

FIM_TOKEN_NAMES = ("fim_prefix", "fim_middle", "fim_suffix", "file_separator")

# Ids 0..107 of Gemma's vocabulary are control tokens; "\n" is 108.
NUM_RESERVED_IDS = 108
NEWLINE_ID = 108


def gemma_reserved_pieces() -> list[str]:
    """The texts of ids 0..107 in Gemma's layout (unused ids keep Gemma's `<unusedN>` names)."""
    pieces = [f"<unused{i - 7}>" for i in range(NUM_RESERVED_IDS)]
    pieces[5], pieces[6] = "<2mass>", "[@BOS@]"
    for tok in SPECIAL_TOKENS.values():
        pieces[tok.gemma_id] = tok.text
    return pieces
