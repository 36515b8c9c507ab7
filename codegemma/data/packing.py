"""One repository -> one token stream: order files, make FIM examples, render, tokenise.

Per repository (a "repository pack"):
    <bos> file_1 <|file_separator|> file_2 <|file_separator|> ... file_n <eos>
with files in `order_repository` order, each either plain (`path\\n{text}`, render_file) or a FIM
example (`render_fim(prefix, suffix, mode, path=path, middle=middle)`), FIM with probability
`fim_rate` and then SPM with probability `spm_rate` (else PSM). All randomness of a file comes
from a generator seeded by (seed, repository, path), so the result does not depend on which
worker, task grouping or order of execution produced it. With `--fim-passes N` a repository is
rendered N times; pass k > 0 seeds with (seed, k, repository, path) instead, so each pass draws
its own FIM decisions and pass 0 is exactly the single-pass output.

Literal special-token texts inside files are neutralised first (filters.neutralise_special_texts),
so the only control tokens in the stream are the ones this module puts there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from codegemma.fim.format import render_file, render_fim
from codegemma.fim.split import FimSplitter
from codegemma.repo.imports import ImportParser
from codegemma.repo.order import order_repository

from .document import Document, Stats
from .filters import neutralise_special_texts, special_text_pattern


# Files are cut into pieces of at most this many characters per token of the sequence length:
# about half a sequence with our tokenizers (code averages about 3.8 characters per token), so a
# FIM example fits in a sequence with room to spare and few are started over (see ShardWriter).
CHARS_PER_TOKEN = 2.0


@dataclass(frozen=True)
class FimConfig:
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    # share of FIM splits whose middle is whole lines of whole statements (FimSplitter.statement_prob)
    statement_rate: float = 0.3
    # share of FIM examples that keep their file's path line; the report calls it optional in
    # prompts, and a model that never saw a FIM example without one is off its training
    # distribution when an IDE or a benchmark sends none. Plain files always keep theirs.
    path_rate: float = 1.0
    # Files longer than this many characters are cut into pieces (piece_bounds), each its own
    # FIM example; None: whole files. `data prepare` sets it from --seq-len.
    max_chars: int | None = None

    def __post_init__(self):
        flags = {"fim_rate": "--fim-rate", "spm_rate": "--spm-rate", "statement_rate": "--fim-statement-rate",
                 "path_rate": "--fim-path-rate"}
        for name, flag in flags.items():
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{flag} must be between 0 and 1, got {v}")


def piece_bounds(text: str, max_chars: int) -> list[tuple[int, int]]:
    """`text` cut at line ends into pieces [lo, hi) of at most `max_chars` (a longer single line
    stays whole), preferring cuts before a line that starts in column 0 (a top-level statement).

    Why: a FIM example longer than a training sequence is cut by the packer's window, and in PSM
    that cut falls between the prefix and the middle; the model then learns to write middles
    without seeing what precedes them, and answers prompts with the top of a file. Each piece is
    rendered as its own file chunk (same path line) with its own FIM decision, so no text is lost;
    its FIM split still uses the syntax tree of the whole file (FimSplitter's `window`).
    """
    if len(text) <= max_chars:
        return [(0, len(text))]
    bounds, start, last_top, pos = [], 0, -1, 0
    for line in text.splitlines(keepends=True):
        if pos > start and line[:1] not in (" ", "\t", "\n", "\r", "") and pos - start >= max_chars // 2:
            last_top = pos
        if pos + len(line) - start > max_chars and pos > start:
            cut = last_top if last_top > start else pos
            bounds.append((start, cut))
            start, last_top = cut, -1
        pos += len(line)
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds


def file_pieces(text: str, max_chars: int) -> list[str]:
    """The texts of `piece_bounds`."""
    return [text[lo:hi] for lo, hi in piece_bounds(text, max_chars)]


def pass_key(seed: int, fim_pass: int, *names: str) -> bytes:
    """The bytes that seed FIM pass `fim_pass`'s randomness for `names` (a repository, a path).

    Pass 0 leaves the pass out: it is the key used before there were passes, so one pass gives
    the same bytes as always.
    """
    if fim_pass < 0:
        raise ValueError(f"fim_pass must be >= 0, got {fim_pass}")
    fields = [str(seed), *([str(fim_pass)] if fim_pass else []), *names]
    return "\0".join(fields).encode("utf-8", "surrogatepass")


def file_rng(seed: int, repo: str, path: str, fim_pass: int = 0) -> np.random.Generator:
    digest = hashlib.sha256(pass_key(seed, fim_pass, repo, path)).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))


def special_texts_of(tokenizer) -> list[str]:
    """Texts the tokenizer turns into control tokens: its special added tokens (and our table)."""
    from codegemma.tokenizer import SPECIAL_TOKENS

    texts = {t.text for t in SPECIAL_TOKENS.values()}
    backend = tokenizer.backend
    if backend is not None:
        texts.update(t.content for t in backend.get_added_tokens_decoder().values() if t.special)
    return sorted(texts)


@dataclass(frozen=True)
class ArrangedRepository:
    """A repository ready to render: its files in packing order (special texts neutralised), each
    with the [lo, hi) character windows of the pieces it is cut into. The same in every FIM pass,
    so it is made once per repository."""

    repo: str
    files: tuple[tuple[str, str | None, str, tuple[tuple[int, int], ...]], ...]  # (path, language, text, windows)


class RepositoryPacker:
    """Holds the per-process pieces (tokenizer, parsers) that packing a repository needs.

    arrange (once per repository) -> render (once per FIM pass) -> encode; `pack` does all three.
    """

    def __init__(self, tokenizer, fim: FimConfig, seed: int):
        tokenizer.require_fim()
        self.tok = tokenizer
        self.fim = fim
        self.seed = seed
        self.splitter = FimSplitter(statement_prob=fim.statement_rate)
        self.imports = ImportParser(self.splitter.parsers)   # the same grammars, loaded once
        self.specials = special_text_pattern(special_texts_of(tokenizer))
        self.sep_id = tokenizer.token_id("file_separator")

    def arrange(self, docs: list[Document], stats: Stats) -> ArrangedRepository:
        """Neutralise special texts, order the files (order_repository), cut long ones into pieces.
        Counts about files go to `stats`: files_packed, file lengths, pieces, neutralised texts."""
        files, langs = {}, {}
        for d in docs:
            text, n = neutralise_special_texts(d.text, self.specials)
            if n:
                stats.changed("special_text_neutralised_files")
                stats.changed("special_text_neutralised", n)
            files[d.path] = text
            langs[d.path] = d.language
        stats.add("files_packed", len(files))
        # a repository whose root is a Python package (site-packages/numpy) is imported by its
        # directory name: `import numpy` must find the root __init__.py
        package = docs[0].repo.rstrip("/").rsplit("/", 1)[-1]
        arranged = []
        for path in order_repository(files, package=package, imports=self.imports):
            text = files.pop(path)
            stats.add(f"file_chars_log2/{max(0, int(np.log2(max(1, len(text))))):02d}")
            pieces = piece_bounds(text, self.fim.max_chars) if self.fim.max_chars else [(0, len(text))]
            if len(pieces) > 1:
                stats.add("files_cut_into_pieces")
                stats.add("file_pieces", len(pieces))
            arranged.append((path, langs[path], text, tuple(pieces)))
        return ArrangedRepository(docs[0].repo, tuple(arranged))

    def render(self, repo: ArrangedRepository, stats: Stats, fim_pass: int = 0) -> list[str]:
        """The rendered chunks (one per file, or per piece of a long file, in packing order) with the
        FIM decisions of pass `fim_pass`, counted in `stats`."""
        chunks = []
        for path, language, text, windows in repo.files:
            rng = file_rng(self.seed, repo.repo, path, fim_pass)
            for window in windows:
                chunks.append(self._render(path, text, window, language, rng, stats))
        return chunks

    def _render(self, path: str, text: str, window: tuple[int, int], language: str | None, rng,
                stats: Stats) -> str:
        """The chunk for the characters [lo, hi) of the file `text`: plain or a FIM example."""
        if rng.random() < self.fim.fim_rate:
            mode = "spm" if rng.random() < self.fim.spm_rate else "psm"
            split = self.splitter.split(text, language, rng, window=window)
            stats.add(f"fim_{mode}")
            stats.add("fim_syntactic" if split.syntactic else "fim_char_fallback")
            # drawn only when some examples lose the path, so the default output is unchanged
            if self.fim.path_rate < 1.0 and rng.random() >= self.fim.path_rate:
                stats.add("fim_without_path")
                path = None
            return render_fim(split.prefix, split.suffix, mode, path=path, middle=split.middle)
        stats.add("plain_files")
        return render_file(path, text[window[0]:window[1]])

    def encode(self, chunks: list[str], stats: Stats) -> np.ndarray:
        """uint32 tokens of the repository pack: <bos> chunks joined by <|file_separator|> <eos>.

        Chunks are encoded in one batch and joined with the separator id: identical to encoding
        `join_files(chunks)`, because special tokens are split out before BPE runs.
        """
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
        stats.add("chunks_packed", len(chunks))   # files and pieces of long files: FIM decisions
        stats.add("tokens", int(tokens.size))
        return tokens

    def pack(self, docs: list[Document], stats: Stats, fim_pass: int = 0) -> np.ndarray:
        """The repository pack of `docs` in FIM pass `fim_pass` (all counts to `stats`)."""
        if not docs:
            return np.empty(0, dtype=np.uint32)
        return self.encode(self.render(self.arrange(docs, stats), stats, fim_pass), stats)


__all__ = ["ArrangedRepository", "FimConfig", "RepositoryPacker", "file_rng", "pass_key"]
