"""Load a tokenizer (tokenizer.json through `tokenizers`, tokenizer.model through sentencepiece as a
fallback) behind one small interface. Special tokens are looked up by their text (special.py)."""

from __future__ import annotations

import os
import re
from typing import Sequence

from codegemma.tokenizer.files import locate_tokenizer
from codegemma.tokenizer.special import FIM_TOKEN_NAMES, SPECIAL_TOKENS


class TokenizerError(ValueError):
    pass


def _unquoted(exc: Exception) -> str:
    """A parser's message without the values it quotes from the file (`invalid type: string "..."`):
    an error names the problem and where it is, never the file's contents."""
    text = re.sub(r'"[^"]*"|\'[^\']*\'|`[^`]*`', "…", " ".join(str(exc).split()))
    return text if len(text) <= 200 else text[:197] + "..."


class Tokenizer:
    def __init__(self, backend=None, sp=None, source: str = "<memory>"):
        if (backend is None) == (sp is None):
            raise ValueError("Tokenizer needs exactly one of a tokenizers.Tokenizer or a SentencePiece model")
        self._tok = backend
        self._sp = sp
        self.source = source
        self._plain = None  # see _plain_backend
        self._max_piece_chars: int | None = None
        self._ids: dict[str, int] = {}
        for name, tok in SPECIAL_TOKENS.items():
            tid = self._piece_to_id(tok.text)
            if tid is not None:
                self._ids[name] = tid
        if self._tok is not None:
            # Make sure every special text present in the vocabulary is matched as a control token.
            from tokenizers import AddedToken

            added = set(self._tok.get_added_tokens_decoder().keys()) if hasattr(
                self._tok, "get_added_tokens_decoder") else set()
            missing = [SPECIAL_TOKENS[n].text for n, i in self._ids.items() if i not in added]
            if missing:
                self._tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        else:
            texts = sorted((SPECIAL_TOKENS[n].text for n in self._ids), key=len, reverse=True)
            self._special_re = re.compile("(" + "|".join(re.escape(t) for t in texts) + ")") if texts else None
        for required in ("bos", "eos"):
            if required not in self._ids:
                raise TokenizerError(f"{source}: the tokenizer has no {SPECIAL_TOKENS[required].text} token; "
                                     "a Gemma tokenizer is required")

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """`path`: a model directory, a tokenizer.json or a tokenizer.model file (files.locate_tokenizer)."""
        p = locate_tokenizer(path)
        if p.suffix == ".json":
            from tokenizers import Tokenizer as HFTokenizer

            try:
                backend = HFTokenizer.from_file(str(p))
            except Exception as exc:  # tokenizers raises a bare Exception on malformed files
                raise TokenizerError(f"{p}: not a valid tokenizer.json ({_unquoted(exc)})") from None
            return cls(backend=backend, source=str(p))
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(p))
        except Exception as exc:
            raise TokenizerError(f"{p}: not a valid SentencePiece model ({_unquoted(exc)})") from None
        return cls(sp=sp, source=str(p))

    def save(self, out_dir: str | os.PathLike) -> None:
        if self._tok is None:
            raise TokenizerError("only tokenizer.json tokenizers can be saved; copy tokenizer.model instead")
        from codegemma.tokenizer.train import save_tokenizer_files

        save_tokenizer_files(self._tok, out_dir)

    # ---- special tokens ------------------------------------------------------------------------
    def _piece_to_id(self, text: str) -> int | None:
        if self._tok is not None:
            return self._tok.token_to_id(text)
        tid = self._sp.PieceToId(text)
        return None if tid == self._sp.unk_id() and text != "<unk>" else tid

    def token_id(self, name: str) -> int:
        """Id of a special token by its name in SPECIAL_TOKENS, e.g. token_id("fim_prefix")."""
        if name not in SPECIAL_TOKENS:
            raise KeyError(f"unknown special token name {name!r}; known: {sorted(SPECIAL_TOKENS)}")
        if name not in self._ids:
            raise TokenizerError(f"{self.source}: the tokenizer has no {SPECIAL_TOKENS[name].text} token")
        return self._ids[name]

    def has(self, name: str) -> bool:
        return name in self._ids

    @property
    def has_fim(self) -> bool:
        return all(n in self._ids for n in FIM_TOKEN_NAMES)

    def require_fim(self) -> None:
        missing = [SPECIAL_TOKENS[n].text for n in FIM_TOKEN_NAMES if n not in self._ids]
        if missing:
            raise TokenizerError(
                f"{self.source}: this tokenizer has no fill-in-the-middle tokens ({', '.join(missing)}); "
                "FIM needs a CodeGemma tokenizer (e.g. google/codegemma-2b) — base Gemma has <unused60..63> there")

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def bos_id(self) -> int:
        return self._ids["bos"]

    @property
    def eos_id(self) -> int:
        return self._ids["eos"]

    @property
    def pad_id(self) -> int:
        return self._ids.get("pad", 0)

    @property
    def vocab_size(self) -> int:
        if self._tok is not None:
            return self._tok.get_vocab_size(with_added_tokens=True)
        return self._sp.GetPieceSize()

    @property
    def max_piece_chars(self) -> int:
        """An upper bound on the characters one token decodes to (its piece's length): a text of
        C characters has at least C / max_piece_chars tokens, which lets callers cut huge texts
        before encoding them."""
        if self._max_piece_chars is None:
            if self._tok is not None:
                pieces = self._tok.get_vocab(with_added_tokens=True)
            else:
                pieces = (self._sp.IdToPiece(i) for i in range(self._sp.GetPieceSize()))
            self._max_piece_chars = max(1, max((len(p) for p in pieces), default=1))
        return self._max_piece_chars

    @property
    def backend(self):
        """The underlying tokenizers.Tokenizer (None for SentencePiece)."""
        return self._tok

    # ---- encode / decode -----------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of `text`.

        parse_special=True: special-token texts inside `text` become their control tokens (as
        transformers does; for prompts written by us). parse_special=False: all of `text` is plain
        text, so `<eos>` or `<|fim_middle|>` written in a source file or sent by a client stay
        characters (llama.cpp's parse_special); use it for anything that is data, not structure.
        """
        return self.encode_batch([text], add_bos, parse_special)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                     parse_special: bool = True) -> list[list[int]]:
        if self._tok is not None:
            tok = self._tok if parse_special else self._plain_backend()
            out = [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
        else:
            out = [self._sp_encode(t, parse_special) for t in texts]
        return [[self.bos_id, *ids] for ids in out] if add_bos else out

    def _plain_backend(self):
        """A copy of the tokenizers backend that matches no added token: every added token is
        marked special and special tokens are encoded as text (built once, never mutated after)."""
        if self._plain is None:
            from tokenizers import AddedToken
            from tokenizers import Tokenizer as HFTokenizer

            plain = HFTokenizer.from_str(self._tok.to_str())
            added = [t.content for t in plain.get_added_tokens_decoder().values()]
            plain.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain

    def _sp_encode(self, text: str, parse_special: bool = True) -> list[int]:
        if self._special_re is None:
            return self._sp.EncodeAsIds(text)
        ids: list[int] = []
        for part in self._special_re.split(text):
            if not part:
                continue
            if not self._special_re.fullmatch(part):
                ids.extend(self._sp.EncodeAsIds(part))
            elif parse_special:
                ids.append(self._piece_to_id(part))
            else:  # as characters: split so that no user-defined piece can match the whole text
                ids.extend(self._sp.EncodeAsIds(part[:1]) + self._sp.EncodeAsIds(part[1:]))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if self._tok is not None:
            return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens:
            special = set(self._ids.values())
            ids = [i for i in ids if i not in special]
        return self._sp.DecodeIds(ids)

    def id_to_piece(self, tid: int) -> str | None:
        if self._tok is not None:
            return self._tok.id_to_token(int(tid))
        return self._sp.IdToPiece(int(tid))

    def piece_bytes(self, tid: int) -> bytes | None:
        """The bytes a token stands for, as llama.cpp's token_to_piece gives them: a byte-fallback token
        (`<0x0A>`) its one byte, any other its piece with `▁` as a space; None for an id without one."""
        raw = self.id_to_piece(tid)
        if not raw:
            return None
        if len(raw) == 6 and raw.startswith("<0x") and raw.endswith(">"):
            return bytes([int(raw[3:5], 16)])
        return raw.replace("\u2581", " ").encode("utf-8")

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, fim={self.has_fim})"
