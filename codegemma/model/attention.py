"""Multi-query / grouped-query / multi-head attention over explicit positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codegemma.model.cache import KVCache
from codegemma.model.config import GemmaConfig
from codegemma.model.layers import apply_rope


class Attention(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                cache: KVCache | None = None, slots: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, kv_len: int | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, nH, T, hd]
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B, nKV, T, hd]
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        is_causal = False
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, positions, slots)  # [B, nKV, S, hd]
            if kv_len is not None:
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
            if attn_mask is None:
                # A query at position p sees cache positions 0..p of its own row.
                keys = torch.arange(k.shape[2], device=x.device)
                attn_mask = keys[None, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, S]
        elif attn_mask is None:
            is_causal = t > 1

        if self.n_kv != self.n_heads:
            # query head j reads KV head j // (nH / nKV)
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             scale=self.head_dim ** -0.5)  # [B, nH, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
