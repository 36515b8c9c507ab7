"""A preallocated key/value cache: the engine owns it, the model only writes into it."""

from __future__ import annotations

import torch

from codegemma.model.config import GemmaConfig


def write_rows(k_all: torch.Tensor, v_all: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
               positions: torch.Tensor, rows: torch.Tensor) -> None:
    """Write k_new/v_new [B, kv_heads, T, head_dim] at `positions` [B, T] of cache `rows` [B]."""
    idx = (rows[:, None], slice(None), positions)
    # Advanced indices around a slice put [B, T] first: assign [B, T, kv_heads, head_dim].
    k_all[idx] = k_new.transpose(1, 2).to(k_all.dtype)
    v_all[idx] = v_new.transpose(1, 2).to(v_all.dtype)


class KVCache:
    """Keys and values for `num_slots` sequences of up to `max_len` tokens; sequence i of a batch
    lives in row i (the engine's slot views, codegemma.infer.kv, map requests to rows).

    k, v: one tensor per layer, each [slots, kv_heads, max_len, head_dim]. Position p of a sequence
    lives at index p, so a slot's cached prefix can be reused by any request whose prompt starts
    with the same tokens. Separate per-layer tensors (not views of one [layers, ...] tensor) let
    torch.compile update a layer's cache in place instead of copying the whole cache each step.
    """

    def __init__(self, config: GemmaConfig, num_slots: int, max_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        shape = (num_slots, config.num_key_value_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.num_slots = num_slots
        self.max_len = max_len

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor,
               positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new/v_new [B, kv_heads, T, head_dim] of sequence i at `positions` [B, T] of row i;
        returns rows 0..B-1, [B, kv_heads, max_len, head_dim]."""
        b = k_new.shape[0]
        rows = torch.arange(b, device=self.k[layer].device)
        write_rows(self.k[layer], self.v[layer], k_new, v_new, positions, rows)
        return self.k[layer][:b], self.v[layer][:b]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))
