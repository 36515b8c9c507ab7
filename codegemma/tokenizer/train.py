"""Byte-fallback BPE tokenizers with Gemma's special-token layout, made with `tokenizers`.

Layout: ids 0..107 are Gemma's control tokens (FIM at 67-70, turns at 106-107), "\n" is 108,
the 256 byte-fallback pieces <0x00>..<0xFF> follow, then the learned pieces. Like Gemma's
SentencePiece model: spaces become "▁", digits are split, no dummy prefix, and `<bos>` is
prepended by the post-processor (transformers adds it; codegemma adds it explicitly).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from codegemma.atomic import atomic_write_text
from codegemma.tokenizer.special import NEWLINE_ID, NUM_RESERVED_IDS, SPECIAL_TOKENS, gemma_reserved_pieces

BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
MIN_VOCAB = NUM_RESERVED_IDS + 1 + len(BYTE_PIECES)  # 365: nothing learned yet

# Newline runs, then runs of "▁" glued to the word that follows, then lone "▁" runs.
_PRETOKENIZE = Regex(r"\n+|▁*[^▁\n]+|▁+")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def _configure(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(_PRETOKENIZE, behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn `vocab_size - 365` pieces from `texts`; the result is deterministic for the same texts."""
    if vocab_size < MIN_VOCAB + 2:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB + 2} (108 control ids, newline, "
                         f"256 byte pieces and some learned ones), got {vocab_size}")
    texts = list(texts)  # read twice: once for the alphabet, once for the merges
    learn = vocab_size - MIN_VOCAB
    # Choose the alphabet here: the trainer breaks ties between equally frequent characters
    # arbitrarily, which would make two trainings on the same text differ.
    counts = Counter()
    for text in texts:
        counts.update(text.replace(" ", "▁"))
    alphabet = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(1, min(200, learn // 2))]]
    draft = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    _configure(draft)
    trainer = BpeTrainer(vocab_size=learn + 1, show_progress=False, special_tokens=[],
                         initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    draft.train_from_iterator(texts, trainer=trainer)
    draft_model = json.loads(draft.to_str())["model"]

    pieces = gemma_reserved_pieces() + ["\n"] + BYTE_PIECES
    vocab = {p: i for i, p in enumerate(pieces)}
    assert vocab["\n"] == NEWLINE_ID
    for piece, _ in sorted(draft_model["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab and len(vocab) < vocab_size:
            vocab[piece] = len(vocab)
    # A corpus too small to learn `learn` pieces leaves room: fill it with unused control pieces
    # (never produced by encoding), so the vocabulary always has the size the model was built for.
    filler = [f"<unused{99 + i}>" for i in range(vocab_size - len(vocab))]
    for piece in filler:
        vocab[piece] = len(vocab)
    merges = []
    for merge in draft_model["merges"]:
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append((a, b))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    _configure(tok)
    reserved = gemma_reserved_pieces() + filler
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in reserved])
    bos = SPECIAL_TOKENS["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos.text} $A", pair=f"{bos.text} $A {bos.text} $B", special_tokens=[(bos.text, bos.gemma_id)])
    return tok


def save_tokenizer_files(tok: Tokenizer, out_dir: str | os.PathLike) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (transformers loads them)."""
    out = Path(out_dir)
    names = {t.name: t.text for t in SPECIAL_TOKENS.values()}
    files = {
        "tokenizer.json": tok.to_str(pretty=False),
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": names["bos"], "eos_token": names["eos"], "unk_token": names["unk"],
            "pad_token": names["pad"], "mask_token": names["mask"],
            "additional_special_tokens": [names[n] for n in (
                "start_of_turn", "end_of_turn", "fim_prefix", "fim_middle", "fim_suffix", "file_separator")],
            "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 8192, "padding_side": "left", "chat_template": CHAT_TEMPLATE,
        }, indent=2),
        "special_tokens_map.json": json.dumps({
            "bos_token": names["bos"], "eos_token": names["eos"], "unk_token": names["unk"],
            "pad_token": names["pad"],
            "additional_special_tokens": [names[n] for n in ("start_of_turn", "end_of_turn")],
        }, indent=2),
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)
