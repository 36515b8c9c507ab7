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
        """x [B, T, H] -> q [B, T, nH*hd], k, v [B, T, nKV*hd]. The inference engine overrides this
        with one matmul over the three weights (codegemma.infer.fuse); the math is the same."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                cache: KVCache | None = None, slots: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, kv_len: int | None = None) -> torch.Tensor:
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
            k, v = cache.update(self.layer_idx, k, v, positions, slots, kv_len)  # [B, nKV, S, hd]
            if kv_len is not None:
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
            if attn_mask is None:
                # A query at position p sees cache positions 0..p of its own row.
                keys = torch.arange(k.shape[2], device=x.device)
                attn_mask = keys[None, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, S]
        elif attn_mask is None:
            is_causal = t > 1

        if t == 1 and cache is not None and attn_mask.dtype == torch.bool:
            # Decode: one query per row. Plain matmuls (cuBLAS GEMV, fused by torch.compile) beat the
            # fused SDPA kernels here: those parallelise over query blocks and get ~1 block per head.
            rep = self.n_heads // self.n_kv
            s_len = k.shape[2]
            qg = q.reshape(b, self.n_kv, rep, self.head_dim)  # query heads grouped by KV head
            scores = torch.matmul(qg, k.transpose(-1, -2)) * self.head_dim ** -0.5  # [B, nKV, rep, S]
            scores = scores.masked_fill(~attn_mask.reshape(b, 1, 1, s_len), float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # softmax in fp32, as HF
            out = torch.matmul(probs, v).reshape(b, self.n_heads, 1, self.head_dim)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
        if self.n_kv != self.n_heads and attn_mask is not None:
            # query head j reads KV head j // (nH / nKV): fold each group of query heads into the
            # query length, q [B, nKV, rep*T, hd], so K/V are read once per KV head, never copied
            # (decode with MQA reads 1/8 of the bytes repeat_interleave would write and read).
            rep = self.n_heads // self.n_kv
            s_len = k.shape[2]
            q = q.reshape(b, self.n_kv, rep * t, self.head_dim)
            mask = attn_mask.expand(b, 1, t, s_len).unsqueeze(2).expand(b, 1, rep, t, s_len)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.reshape(b, 1, rep * t, s_len),
                                                 scale=self.head_dim ** -0.5)  # [B, nKV, rep*T, hd]
            out = out.reshape(b, self.n_heads, t, self.head_dim)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
        if self.n_kv != self.n_heads:
            # query head j reads KV head j // (nH / nKV)
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             scale=self.head_dim ** -0.5)  # [B, nH, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
