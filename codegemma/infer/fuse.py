"""Serving-only model paths, applied from outside the model: the decode attention path, and fewer,
larger GEMMs (q/k/v in one matmul, gate/up in one matmul).

At batch 1 a decode step is a chain of GEMVs; each extra GEMV costs a kernel launch (plus cuBLAS
split-K setup/reduction kernels) on top of its weight reads. Concatenating the weights of the
projections that read the same input saves 3 kernels or more per layer, with the same arithmetic.

Applied from outside the model, like gpt-fast's quantisation: each layer's q/k/v (and gate/up)
weights are copied once into one concatenated tensor and the original parameters are replaced by
views into it, so the model holds one copy of every weight, keeps its Hugging Face parameter names
and state_dict, and its unfused code path still computes the same values. The attention and MLP
modules get subclasses whose projections use the concatenated tensor.

Caveat: moving the model afterwards (`.to(...)`) or `load_state_dict(..., assign=True)` breaks the
sharing between the views and the fused tensor; the engine fuses after putting the model on its
device, and a model is fused at most once (fuse_projections is idempotent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codegemma.model.attention import Attention
from codegemma.model.layers import GeGLU


class DecodeAttention(Attention):
    """Attention with a decode path: one query per row (T == 1) against the cache, as plain matmuls.
    cuBLAS GEMV (fused by torch.compile) beats the fused SDPA kernels there: those parallelise over
    query blocks and get about one block per head. Other shapes take the model's own path."""

    def attend(self, q, k, v, attn_mask, is_causal):
        b, _, t, _ = q.shape
        if t != 1 or attn_mask is None or attn_mask.dtype != torch.bool:
            return super().attend(q, k, v, attn_mask, is_causal)
        rep = self.n_heads // self.n_kv
        s_len = k.shape[2]
        qg = q.reshape(b, self.n_kv, rep, self.head_dim)  # query heads grouped by KV head
        scores = torch.matmul(qg, k.transpose(-1, -2)) * self.head_dim ** -0.5  # [B, nKV, rep, S]
        scores = scores.masked_fill(~attn_mask.reshape(b, 1, 1, s_len), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # softmax in fp32, as HF
        return torch.matmul(probs, v).reshape(b, self.n_heads, 1, self.head_dim)


class FusedQKVAttention(DecodeAttention):
    """Attention whose q/k/v projections are one matmul over `qkv_weight` [(nH + 2 nKV) hd, H]."""

    def project_qkv(self, x):
        q_out = self.n_heads * self.head_dim
        kv_out = self.n_kv * self.head_dim
        return F.linear(x, self.qkv_weight).split([q_out, kv_out, kv_out], dim=-1)


class FusedGeGLU(GeGLU):
    """GeGLU whose gate/up projections are one matmul over `gate_up_weight` [2 I, H]."""

    def forward(self, x):
        gate, up = F.linear(x, self.gate_up_weight).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


@torch.no_grad()
def _concat_into_views(linears: list[nn.Linear]) -> torch.Tensor:
    """Concatenate the weights of `linears` along the output dim and make each weight a view of the
    result (the originals are freed when nothing else holds them)."""
    fused = torch.cat([m.weight.detach() for m in linears], dim=0)
    lo = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight = nn.Parameter(fused[lo:lo + n], requires_grad=m.weight.requires_grad)
        lo += n
    return fused


def use_decode_attention(model: nn.Module) -> int:
    """Give every attention module of `model` the decode path (in place; idempotent)."""
    changed = 0
    for module in model.modules():
        if type(module) is Attention:
            module.__class__ = DecodeAttention
            changed += 1
    return changed


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v and gate/up in every layer of `model` in place (attention gets the decode path
    too); returns the modules changed (0 when already fused)."""
    changed = 0
    for module in list(model.modules()):
        if type(module) in (Attention, DecodeAttention):
            w = _concat_into_views([module.q_proj, module.k_proj, module.v_proj])
            module.__class__ = FusedQKVAttention
            module.register_buffer("qkv_weight", w, persistent=False)  # not in the state_dict
            changed += 1
        elif type(module) is GeGLU:
            w = _concat_into_views([module.gate_proj, module.up_proj])
            module.__class__ = FusedGeGLU
            module.register_buffer("gate_up_weight", w, persistent=False)
            changed += 1
    return changed


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m, (FusedQKVAttention, FusedGeGLU)) for m in model.modules())
