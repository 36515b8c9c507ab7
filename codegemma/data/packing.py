"""One repository -> one token stream: order files, make FIM examples, render, tokenise.

Per repository (a "repository pack"):
    <bos> file_1 <|file_separator|> file_2 <|file_separator|> ... file_n <eos>
with files in `order_repository` order, each either plain (`path\\n{text}`, render_file) or a FIM
example (`render_fim(prefix, suffix, mode, path=path, middle=middle)`), FIM with probability
`fim_rate` and then SPM with probability `spm_rate` (else PSM). All randomness of a file comes
from a generator seeded by (seed, repository, path), so the result does not depend on which
worker, task grouping or order of execution produced it.

Literal special-token texts inside files are neutralised first (filters.neutralise_special_texts),
so the only control tokens in the stream are the ones this module puts there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from codegemma.fim.format import render_file, render_fim
from codegemma.fim.split import FimSplitter
from codegemma.repo.order import order_repository

from .document import Document, Stats
from .filters import neutralise_special_texts, special_text_pattern


# Characters per token assumed when sizing a FIM example to the sequence length: below what code
# averages with our tokenizers (about 3.8), so the estimate errs towards examples that fit.
CHARS_PER_TOKEN = 3.0


@dataclass(frozen=True)
class FimConfig:
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    # A FIM example (prefix + middle + suffix) is kept to about this many characters; None: whole
    # files. `data prepare` sets it from --seq-len (see fim_window).
    max_chars: int | None = None

    def __post_init__(self):
        for name in ("fim_rate", "spm_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")


def fim_window(prefix: str, middle: str, suffix: str, max_chars: int) -> tuple[str, str]:
    """(prefix, suffix) cut to whole lines around the middle so all three fit in `max_chars`.

    A FIM example longer than a training sequence is cut by the packer's window, and in PSM the
    cut falls between the prefix and the middle: the model then learns to write middles without
    seeing what comes before them, and answers prompts with the top of a file. Keeping the text
    nearest the hole (3/4 of the room before it, 1/4 after, unused room passed on) gives training
    examples the shape `fit_fim` gives long prompts at inference.
    """
    room = max(0, max_chars - len(middle))
    if len(prefix) + len(suffix) <= room:
        return prefix, suffix
    keep_suffix = min(len(suffix), max(room // 4, room - len(prefix)))
    keep_prefix = min(len(prefix), room - keep_suffix)
    head = prefix[len(prefix) - keep_prefix:]
    if keep_prefix < len(prefix) and "\n" in head:
        head = head[head.index("\n") + 1:]          # start at a line start
    tail = suffix[:keep_suffix]
    if keep_suffix < len(suffix) and "\n" in tail:
        tail = tail[: tail.rindex("\n") + 1]        # end at a line end
    return head, tail


def file_rng(seed: int, repo: str, path: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{repo}\0{path}".encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))


def special_texts_of(tokenizer) -> list[str]:
    """Texts the tokenizer turns into control tokens: its special added tokens (and our table)."""
    from codegemma.tokenizer import SPECIAL_TOKENS

    texts = {t.text for t in SPECIAL_TOKENS.values()}
    backend = tokenizer.backend
    if backend is not None:
        texts.update(t.content for t in backend.get_added_tokens_decoder().values() if t.special)
    return sorted(texts)


class RepositoryPacker:
    """Holds the per-process pieces (tokenizer, parsers) that pack_repository needs."""

    def __init__(self, tokenizer, fim: FimConfig, seed: int):
        tokenizer.require_fim()
        self.tok = tokenizer
        self.fim = fim
        self.seed = seed
        self.splitter = FimSplitter()
        self.max_middle = fim.max_chars // 2 if fim.max_chars else None
        self.specials = special_text_pattern(special_texts_of(tokenizer))
        self.sep_id = tokenizer.token_id("file_separator")

    def render(self, docs: list[Document], stats: Stats) -> list[str]:
        """The rendered chunks (one per file, in packing order) of one repository's documents."""
        files, langs = {}, {}
        for d in docs:
            text, n = neutralise_special_texts(d.text, self.specials)
            if n:
                stats.changed("special_text_neutralised_files")
                stats.changed("special_text_neutralised", n)
            files[d.path] = text
            langs[d.path] = d.language
        chunks = []
        # a repository whose root is a Python package (site-packages/numpy) is imported by its
        # directory name: `import numpy` must find the root __init__.py
        package = docs[0].repo.rstrip("/").rsplit("/", 1)[-1]
        for path in order_repository(files, package=package):
            text = files[path]
            rng = file_rng(self.seed, docs[0].repo, path)
            stats.add(f"file_chars_log2/{max(0, int(np.log2(max(1, len(text))))):02d}")
            if rng.random() < self.fim.fim_rate:
                mode = "spm" if rng.random() < self.fim.spm_rate else "psm"
                split = self.splitter.split(text, langs[path], rng, max_middle=self.max_middle)
                stats.add(f"fim_{mode}")
                stats.add("fim_syntactic" if split.syntactic else "fim_char_fallback")
                prefix, suffix = split.prefix, split.suffix
                if self.fim.max_chars and len(text) > self.fim.max_chars:
                    prefix, suffix = fim_window(prefix, split.middle, suffix, self.fim.max_chars)
                    stats.add("fim_windowed")
                chunks.append(render_fim(prefix, suffix, mode, path=path, middle=split.middle))
            else:
                stats.add("plain_files")
                chunks.append(render_file(path, text))
        return chunks

    def pack(self, docs: list[Document], stats: Stats) -> np.ndarray:
        """uint32 tokens of the repository pack: <bos> chunks joined by <|file_separator|> <eos>.

        Chunks are encoded in one batch and joined with the separator id: identical to encoding
        `join_files(chunks)`, because special tokens are split out before BPE runs.
        """
        if not docs:
            return np.empty(0, dtype=np.uint32)
        chunks = self.render(docs, stats)
        pieces = [np.asarray([self.tok.bos_id], dtype=np.uint32)]
        sep = np.asarray([self.sep_id], dtype=np.uint32)
        # batches of 256 files: Python lists of ids for a whole large repository would need GBs
        for lo in range(0, len(chunks), 256):
            for i, ids in enumerate(self.tok.encode_batch(chunks[lo:lo + 256]), start=lo):
                if i:
                    pieces.append(sep)
                pieces.append(np.asarray(ids, dtype=np.uint32))
        pieces.append(np.asarray([self.tok.eos_id], dtype=np.uint32))
        tokens = np.concatenate(pieces)
        stats.add("files_packed", len(chunks))
        stats.add("tokens", int(tokens.size))
        return tokens


__all__ = ["FimConfig", "RepositoryPacker", "file_rng"]
