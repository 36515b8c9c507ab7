"""Multi-query / grouped-query / multi-head attention over explicit positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

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

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, H] -> q [B, T, nH*hd], k, v [B, T, nKV*hd]."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, H] at `positions` [B, T] -> [B, T, H].

        With a cache, the new keys/values are written into it (`cache.update`) and each query at
        position p attends to the cache positions <= p that `update` returns. Without one the T
        tokens attend causally among themselves, or as `attn_mask` says (bool, True = may attend,
        broadcastable to [B, 1, T, T]; or a FlexAttention BlockMask for packed training rows).
        """
        b, t, _ = x.shape
        q, k, v = self.project_qkv(x)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, nH, T, hd]
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B, nKV, T, hd]
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if isinstance(attn_mask, BlockMask):
            # Training on packed documents (codegemma.train.step): block-sparse attention that skips
            # masked blocks; under autocast q, k are fp32 after RoPE, so match v's dtype first.
            out = flex_attention(q.to(v.dtype), k.to(v.dtype), v, block_mask=attn_mask,
                                 scale=self.head_dim ** -0.5, enable_gqa=self.n_kv != self.n_heads)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

        is_causal = False
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, positions)  # [B, nKV, S, hd]
            if attn_mask is None:
                # A query at position p sees cache positions 0..p of its own row.
                keys = torch.arange(k.shape[2], device=x.device)
                attn_mask = keys[None, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, S]
        elif attn_mask is None:
            is_causal = t > 1
        out = self.attend(q, k, v, attn_mask, is_causal)  # [B, nH, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
               is_causal: bool) -> torch.Tensor:
        """q [B, nH, T, hd], k/v [B, nKV, S, hd] -> [B, nH, T, hd]."""
        b, _, t, _ = q.shape
        if self.n_kv != self.n_heads and attn_mask is not None:
            # query head j reads KV head j // (nH / nKV): fold each group of query heads into the
            # query length, q [B, nKV, rep*T, hd], so K/V are read once per KV head, never copied.
            rep = self.n_heads // self.n_kv
            s_len = k.shape[2]
            q = q.reshape(b, self.n_kv, rep * t, self.head_dim)
            mask = attn_mask.expand(b, 1, t, s_len).unsqueeze(2).expand(b, 1, rep, t, s_len)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.reshape(b, 1, rep * t, s_len),
                                                 scale=self.head_dim ** -0.5)  # [B, nKV, rep*T, hd]
            return out.reshape(b, self.n_heads, t, self.head_dim)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                              scale=self.head_dim ** -0.5)  # [B, nH, T, hd]
