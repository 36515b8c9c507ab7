"""The engine's KV cache as the model sees it: a view onto some cache rows (slots) and positions,
and moving cached keys/values to new positions (chunk reuse).

The model (codegemma.model) writes into and reads from whatever cache it is given through one
method, `update(layer, k, v, positions) -> (k, v)`. The engine keeps one preallocated KVCache with
a row per slot; for each call it hands the model a `SlotView`: the rows its requests live in (any
order) and how many positions attention needs to read (`kv_len`, a bucket on GPU), so a decode
step at a short context copies the context, not the whole cache.

`tail=True` says more: the queries are exactly the last positions before kv_len, one row (an
eager prefill chunk). Attention is then causal aligned to the bottom right, which the serving
attention (infer/fuse.py) runs with SDPA's lower-right causal bias: flash attention, no mask.
"""

from __future__ import annotations

import torch

from codegemma.model.cache import KVCache, write_rows
from codegemma.model.layers import apply_rope, rope_cos_sin


class SlotView:
    __slots__ = ("cache", "slots", "kv_len", "tail")

    def __init__(self, cache: KVCache, slots: torch.Tensor, kv_len: int | None = None, tail: bool = False):
        self.cache, self.slots, self.kv_len, self.tail = cache, slots, kv_len, tail  # slots: LongTensor [B]

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor,
               positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k_new/v_new [B, kv_heads, T, head_dim] at `positions` [B, T] of rows `slots`;
        returns those rows' first kv_len positions, [B, kv_heads, kv_len, head_dim]."""
        k_all, v_all = self.cache.k[layer], self.cache.v[layer]
        write_rows(k_all, v_all, k_new, v_new, positions, self.slots)
        if self.kv_len is not None and self.kv_len < self.cache.max_len:
            k_all, v_all = k_all[:, :, :self.kv_len], v_all[:, :, :self.kv_len]
        return k_all[self.slots], v_all[self.slots]


@torch.inference_mode()
def move_positions(cache: KVCache, slot: int, moves: list[tuple[int, int, int]], head_dim: int,
                   rope_theta: float) -> None:
    """Move cached runs of row `slot`: each (src, dst, n) copies positions src..src+n-1 to
    dst..dst+n-1. Values move as they are; keys carry RoPE, a rotation by their position, so they
    are rotated by dst - src (rotations compose: R(p + d) = R(d) R(p)), computed in fp32. All
    sources are read before anything is written, so runs may overlap their destinations."""
    if not moves:
        return
    dev = cache.k[0].device
    src = torch.cat([torch.arange(s, s + n) for s, _, n in moves]).to(dev)
    dst = torch.cat([torch.arange(d, d + n) for _, d, n in moves]).to(dev)
    cos, sin = rope_cos_sin((dst - src)[None], head_dim, rope_theta, torch.float32)  # [1, 1, n, hd]
    for k_all, v_all in zip(cache.k, cache.v):
        k_row, v_row = k_all[slot], v_all[slot]  # [kv_heads, max_len, hd]
        k = apply_rope(k_row[:, src].float()[None], cos, sin)[0]
        v = v_row[:, src]
        k_row[:, dst] = k.to(k_row.dtype)
        v_row[:, dst] = v
