"""Rows of tokens for training, in a resumable order, split across processes.

A *row* is one sequence of `seq_len` tokens with its segment ids (which document each token
belongs to, -1 = padding) and, for instruction tuning, which tokens are model output.
Both sources (packed shards, chat JSON lines) give rows; `RowStream` walks them in a seeded
order and `make_batch` turns rows into the tensors of one forward pass.

Decisions (see docs/training.md):
- The target of token t is token t+1 of the same row. No loss on padding, none where t+1 starts
  a new document (predicting document B's first token from document A is noise once attention
  is cut at the boundary), none on the row's last token (its successor is in another row).
- With `doc_mask` the positions restart at 0 in each document, like at inference time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IGNORE = -100  # cross-entropy's ignore_index


@dataclass(frozen=True)
class Row:
    tokens: np.ndarray  # int64 [T]
    segments: np.ndarray  # int32 [T], -1 = padding
    model_turn: np.ndarray | None = None  # bool [T]: loss only where True (SFT); None = every token


class PackedRows:
    """Rows of a packed shard directory (codegemma.data.shards)."""

    def __init__(self, directory: str | Path, split: str = "train"):
        from codegemma.data.shards import ShardReader

        self.reader = ShardReader(directory, split=split)
        self.seq_len = int(self.reader.seq_len)
        self.manifest = self.reader.manifest

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> Row:
        tokens, segments = self.reader[i]
        return Row(np.asarray(tokens, dtype=np.int64), np.asarray(segments, dtype=np.int32))


class ChatRows:
    """Chat examples rendered with the chat template and packed in order into rows.

    Each example is tokenized by `codegemma.fim.prompt.chat_ids`, the builder inference uses too
    (turn markers are control tokens, message texts plain text), and marked model / not model
    per token.
    An example longer than a row is cut at the row's end.
    """

    def __init__(self, path: str | Path, tokenizer, seq_len: int):
        from codegemma.fim.prompt import chat_ids

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SFT file {path} not found; pass JSON lines of {{\"messages\": [...]}} to --sft")
        self.seq_len = seq_len
        self.truncated = 0
        examples: list[tuple[list[int], list[bool]]] = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    messages = record["messages"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with a \"messages\" list") from None
                ids: list[int] = []
                mask: list[bool] = []
                try:
                    segments = chat_ids(tokenizer, messages)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise ValueError(f"{path}:{lineno}: {exc}") from None
                for piece, is_model in segments:
                    ids += piece
                    mask += [bool(is_model)] * len(piece)
                if len(ids) > seq_len:
                    ids, mask = ids[:seq_len], mask[:seq_len]
                    self.truncated += 1
                if not any(mask):
                    continue  # nothing to learn from (e.g. no model turn survived the cut)
                examples.append((ids, mask))
        if not examples:
            raise ValueError(f"{path}: no example with a model turn; each line needs a message with role 'model'")
        self.rows = self._pack(examples, seq_len, tokenizer.pad_id)

    @staticmethod
    def _pack(examples, seq_len: int, pad_id: int) -> list[Row]:
        """Next-fit packing in file order (deterministic, linear time): each row holds whole examples."""
        bins: list[list[tuple[list[int], list[bool]]]] = [[]]
        room = seq_len
        for ex in examples:
            if len(ex[0]) > room:
                bins.append([])
                room = seq_len
            bins[-1].append(ex)
            room -= len(ex[0])
        rows = []
        for content in bins:
            tokens = np.full(seq_len, pad_id, dtype=np.int64)
            segments = np.full(seq_len, -1, dtype=np.int32)
            model = np.zeros(seq_len, dtype=bool)
            at = 0
            for seg, (ids, mask) in enumerate(content):
                tokens[at:at + len(ids)] = ids
                segments[at:at + len(ids)] = seg
                model[at:at + len(ids)] = mask
                at += len(ids)
            rows.append(Row(tokens, segments, model))
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]


class RowStream:
    """A seeded endless order over rows; each process reads its own share of every micro-batch.

    The order depends only on (seed, number of rows), not on the number of processes: the
    `consumed` counter (rows taken by all processes together) is the whole position, and a
    checkpoint stores it.
    """

    def __init__(self, rows, seed: int, rank: int = 0, world: int = 1):
        if len(rows) == 0:
            raise ValueError("training data has no rows; prepare more data or check --data")
        self.rows, self.seed, self.rank, self.world = rows, seed, rank, world
        self.consumed = 0
        self._cached: tuple[int, np.ndarray | None] = (-1, None)

    def _order(self, epoch: int) -> np.ndarray:
        if self._cached[0] != epoch:  # one permutation kept: reads move through epochs in order
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.rows)))
        return self._cached[1]

    def _row_at(self, global_index: int) -> Row:
        epoch, i = divmod(global_index, len(self.rows))
        return self.rows[int(self._order(epoch)[i])]

    def next_rows(self, per_process: int) -> list[Row]:
        """This process's rows of the next micro-batch; advances the position for every process."""
        start = self.consumed + self.rank * per_process
        rows = [self._row_at(start + j) for j in range(per_process)]
        self.consumed += per_process * self.world
        return rows

    @property
    def epoch(self) -> float:
        return self.consumed / len(self.rows)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "rows": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("rows") != len(self.rows) or state.get("seed") != self.seed:
            raise ValueError(
                f"checkpoint was written for {state.get('rows')} rows with seed {state.get('seed')}, but the data "
                f"now has {len(self.rows)} rows with seed {self.seed}; resume with the same data and seed")
        self.consumed = int(state["consumed"])


def document_positions(segments: torch.Tensor) -> torch.Tensor:
    """[B,T] int segments -> [B,T] long positions that restart at 0 where the segment changes."""
    b, t = segments.shape
    idx = torch.arange(t, device=segments.device).expand(b, t)
    start = torch.ones_like(segments, dtype=torch.bool)
    start[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - first


def make_batch(rows: list[Row], doc_mask: bool) -> dict[str, torch.Tensor]:
    """Rows -> tokens/positions/segments/labels [B,T] on the CPU (labels = IGNORE where no loss)."""
    tokens = torch.from_numpy(np.stack([r.tokens for r in rows]))
    segments = torch.from_numpy(np.stack([r.segments for r in rows])).long()
    labels = torch.full_like(tokens, IGNORE)
    same_doc = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] >= 0)
    if any(r.model_turn is not None for r in rows):
        model = torch.from_numpy(np.stack([
            r.model_turn if r.model_turn is not None else np.ones_like(r.tokens, dtype=bool) for r in rows]))
        same_doc &= model[:, 1:]
    labels[:, :-1] = torch.where(same_doc, tokens[:, 1:], torch.full_like(tokens[:, 1:], IGNORE))
    if doc_mask:
        positions = document_positions(segments)
    else:
        positions = torch.arange(tokens.shape[1]).expand_as(tokens).contiguous()
    return {"tokens": tokens, "positions": positions, "segments": segments, "labels": labels}
