"""Token shards on disk: the one format between `codegemma data prepare` and the trainer.

Layout of an output directory (all little-endian):

    manifest.json                 written last (atomically): its presence means the data set is complete
    train-00000.tokens.bin        uint32 tokens, exactly num_sequences * seq_len of them
    train-00000.index.npy         int64 [num_segments, 2]: (start, length) token offsets inside the shard
                                  of each document piece; tokens covered by no piece are padding
    val-00000.tokens.bin / .index.npy   the held-out split, same format

A "document" (attention-masking unit) is a piece of one repository pack that lies inside one
sequence: `ShardReader[i]` numbers the pieces of sequence i as segments 0, 1, 2, ... and gives
padding the segment id -1. The trainer forbids attention across segments.

The manifest holds: format/version, seq_len, dtype, per-split shard list and counts, the pipeline
config, seed, code version, tokenizer identity, filter/drop statistics and the validation-split
rule. See docs/data.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codegemma.atomic import atomic_path, atomic_write_bytes, atomic_write_text

FORMAT_NAME = "codegemma-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
MANIFEST = "manifest.json"


def atomic_write_json(path: Path, obj) -> None:
    """The manifest's JSON layout (sorted keys, indented), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class ShardWriter:
    """Packs a stream of documents (token arrays) into fixed-length sequences and shards.

    Policy: documents are concatenated in the order given and cut into `seq_len` windows, so a
    long document continues in the next sequence (as a new segment there). With `bos_id`, each
    continuation segment starts with that token: a repository pack can run to thousands of
    sequences, and without it the model would almost never see `<bos>` ahead of code, which is how
    every inference prompt starts. With `restart_after_id` (the file separator) and `keep_from_ids`
    (<|fim_suffix|>, <|fim_prefix|>) as well, the document is a run of chunks (files) each ending
    in the former, and a chunk that fits in a sequence and would be cut after the last of its
    `keep_from_ids` tokens is started over in the next sequence: the current one is filled with its
    head (trained as plain text) and the next opens with `<bos>` and the whole chunk. Cut there, a
    PSM example loses the end of its prefix, which the middle needs, and an SPM one its suffix;
    cut earlier, the middle keeps the text it is written against. The price is some repeated
    tokens (`num_repeated_tokens`). Only the last sequence
    of the split is padded (with `pad_id`, segment -1). Each shard holds `sequences_per_shard`
    sequences (the last shard may hold fewer).
    """

    def __init__(self, out_dir: Path, split: str, seq_len: int, pad_id: int,
                 sequences_per_shard: int = 1024, bos_id: int | None = None,
                 restart_after_id: int | None = None, keep_from_ids: tuple[int, ...] = ()):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.seq_len = int(seq_len)
        self.pad_id = int(pad_id)
        self.bos_id = bos_id
        self.restart_after_id = restart_after_id
        self.keep_from_ids = np.asarray(keep_from_ids, dtype=np.uint32)
        self.num_repeated_tokens = 0
        self.tokens_per_shard = self.seq_len * int(sequences_per_shard)
        self.shards: list[dict] = []
        self.num_documents = 0
        self.num_real_tokens = 0
        self._buf = np.empty(self.tokens_per_shard, dtype=np.uint32)
        self._fill = 0                      # tokens in _buf
        self._segments: list[tuple[int, int]] = []   # (start, length) in the current shard
        self._fh = None
        self._tmp: Path | None = None

    def add_document(self, tokens: np.ndarray) -> None:
        """Append one document; it is split across sequence (and shard) boundaries as needed."""
        tokens = np.asarray(tokens, dtype=np.uint32)
        if tokens.size == 0:
            return
        self.num_documents += 1
        self.num_real_tokens += int(tokens.size)
        # chunk i is tokens[starts[i]:starts[i + 1]]; each but the last ends with restart_after_id
        starts = None
        if self.restart_after_id is not None:
            starts = np.concatenate([[0], np.flatnonzero(tokens == self.restart_after_id) + 1, [tokens.size]])
        pos = 0
        while pos < tokens.size:
            room_seq = self.seq_len - (self._fill % self.seq_len)
            start = self._fill
            if pos and self.bos_id is not None:   # a continuation: it opens with <bos>
                self._buf[self._fill] = self.bos_id
                self._fill += 1
                room_seq -= 1
            take = min(room_seq, tokens.size - pos)
            self._buf[self._fill:self._fill + take] = tokens[pos:pos + take]
            self._fill += take
            self._segments.append((start, self._fill - start))
            end, pos = pos + take, self._next_position(tokens, starts, pos, pos + take)
            self.num_repeated_tokens += end - pos
            if self._fill == self.tokens_per_shard:
                self._flush_shard()

    def _next_position(self, tokens: np.ndarray, starts, pos: int, end: int) -> int:
        """Where the next sequence resumes the document: `end`, or the start of the chunk that the
        cut at `end` falls inside (see the class doc for when)."""
        if starts is None or end >= starts[-1]:
            return end
        i = int(np.searchsorted(starts, end, side="right")) - 1      # the chunk holding token `end`
        chunk_start, chunk_end = int(starts[i]), int(starts[i + 1])
        if not (pos < chunk_start < end and chunk_end - chunk_start <= self.seq_len - 1):
            return end
        marks = np.flatnonzero(np.isin(tokens[chunk_start:chunk_end], self.keep_from_ids))
        return chunk_start if marks.size and chunk_start + int(marks[-1]) < end else end

    def close(self) -> list[dict]:
        """Pad the last sequence, write the last shard, return the shard entries for the manifest."""
        if self._fill % self.seq_len:
            pad = self.seq_len - self._fill % self.seq_len
            self._buf[self._fill:self._fill + pad] = self.pad_id
            self._fill += pad
        if self._fill:
            self._flush_shard()
        return self.shards

    def _flush_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}"
        tok_path = self.out_dir / f"{name}.tokens.bin"
        idx_path = self.out_dir / f"{name}.index.npy"
        atomic_write_bytes(tok_path, self._buf[:self._fill].astype("<u4").tobytes())
        with atomic_path(idx_path) as tmp:
            np.save(tmp, np.asarray(self._segments, dtype=np.int64).reshape(-1, 2))
        self.shards.append({
            "tokens": tok_path.name,
            "index": idx_path.name,
            "num_sequences": self._fill // self.seq_len,
            "num_segments": len(self._segments),
        })
        self._fill = 0
        self._segments = []


class ShardReader:
    """Random access to packed sequences: `reader[i] -> (tokens uint32 [seq_len], segment_ids int32 [seq_len])`.

    Shards are memory-mapped, so opening is cheap and many loader workers can share the files.
    """

    def __init__(self, directory, split: str = "train"):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {self.directory} is not a finished data set "
                f"(run `codegemma data prepare --out {self.directory} ...` to completion)")
        with open(path) as fh:
            self.manifest: dict = json.load(fh)
        if self.manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a {FORMAT_NAME} manifest")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.seq_len: int = int(self.manifest["seq_len"])
        self.pad_id: int = int(self.manifest.get("pad_id", 0))
        shards = self.manifest["splits"][split]["shards"]
        counts = [int(s["num_sequences"]) for s in shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._shards = shards
        self._tokens: list[np.ndarray | None] = [None] * len(shards)
        self._index: list[np.ndarray | None] = [None] * len(shards)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _open(self, k: int):
        if self._tokens[k] is None:
            entry = self._shards[k]
            self._tokens[k] = np.memmap(self.directory / entry["tokens"], dtype="<u4", mode="r")
            self._index[k] = np.load(self.directory / entry["index"], mmap_mode="r")
        return self._tokens[k], self._index[k]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences ({self.split})")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        tokens, index = self._open(k)
        lo = (i - int(self._starts[k])) * self.seq_len
        hi = lo + self.seq_len
        seq = np.array(tokens[lo:hi], dtype=np.uint32)
        seg = np.full(self.seq_len, -1, dtype=np.int32)
        # Pieces never straddle a sequence boundary, so those starting in [lo, hi) are this sequence's.
        starts = index[:, 0]
        a = int(np.searchsorted(starts, lo, side="left"))
        b = int(np.searchsorted(starts, hi, side="left"))
        for s, (start, length) in enumerate(np.asarray(index[a:b])):
            seg[start - lo:start - lo + length] = s
        return seq, seg

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def remove_shards(directory: Path) -> None:
    """Delete shard files and the manifest of a previous (possibly partial) pack in `directory`."""
    directory = Path(directory)
    for pattern in ("*.tokens.bin", "*.index.npy", MANIFEST):
        for p in directory.glob(pattern):
            p.unlink()
