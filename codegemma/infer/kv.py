"""The engine's KV cache as the model sees it: a view onto some cache rows (slots) and positions.

The model (codegemma.model) writes into and reads from whatever cache it is given through one
method, `update(layer, k, v, positions) -> (k, v)`. The engine keeps one preallocated KVCache with
a row per slot; for each call it hands the model a `SlotView`: the rows its requests live in (any
order) and how many positions attention needs to read (`kv_len`, a bucket on GPU), so a decode
step at a short context copies the context, not the whole cache.
"""

from __future__ import annotations

import torch

from codegemma.model.cache import KVCache, write_rows


class SlotView:
    __slots__ = ("cache", "slots", "kv_len")

    def __init__(self, cache: KVCache, slots: torch.Tensor, kv_len: int | None = None):
        self.cache, self.slots, self.kv_len = cache, slots, kv_len  # slots: LongTensor [B]

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor,
               positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new/v_new [B, kv_heads, T, head_dim] at `positions` [B, T] of rows `slots`;
        returns those rows' first kv_len positions, [B, kv_heads, kv_len, head_dim]."""
        k_all, v_all = self.cache.k[layer], self.cache.v[layer]
        write_rows(k_all, v_all, k_new, v_new, positions, self.slots)
        if self.kv_len is not None and self.kv_len < self.cache.max_len:
            k_all, v_all = k_all[:, :, :self.kv_len], v_all[:, :, :self.kv_len]
        return k_all[self.slots], v_all[self.slots]
