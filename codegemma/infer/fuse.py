"""Serving-only model paths, applied from outside the model: the decode attention path, and fewer,
larger GEMMs (q/k/v in one matmul, gate/up in one matmul).

At batch 1 a decode step is a chain of GEMVs; each extra GEMV costs a kernel launch (plus cuBLAS
split-K setup/reduction kernels) on top of its weight reads. Concatenating the weights of the
projections that read the same input saves 3 kernels or more per layer, with the same arithmetic.

Applied from outside the model, like the quantization in infer/quantize.py: `fuse_linears` builds
one module over the concatenated weights of several linears (plain or quantized) and turns the
originals' tensors into views of it, so the model holds one copy of every weight, keeps its
Hugging Face parameter names and state_dict (the fused module's tensors are non-persistent), and
its unfused code path still computes the same values. The attention and MLP modules get
subclasses that call the fused module.

Caveat: moving the model afterwards (`.to(...)`) or `load_state_dict(..., assign=True)` breaks the
sharing between the views and the fused tensor; the engine fuses after putting the model on its
device, and a model is fused at most once (fuse_projections is idempotent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import CausalBias, causal_lower_right

from codegemma.model.attention import Attention
from codegemma.model.layers import GeGLU


MATMUL_MAX_QUERIES = 64  # query blocks up to this length take the matmul path


class DecodeAttention(Attention):
    """Attention with serving paths. Few queries per row (a decode step, a verification pass, a
    short prefill chunk: T <= MATMUL_MAX_QUERIES) against the cache run as plain batched matmuls:
    the fused SDPA kernels parallelise over query blocks and with one KV head (2b's MQA) get one or
    two thread blocks for a 16-token verification. A long prefill chunk (a SlotView with tail=True:
    the queries are the last positions of the keys) is causal aligned bottom right: SDPA's
    lower-right causal bias runs it in flash attention with no mask tensor. Other shapes take the
    model's own path."""

    def forward(self, x, cos, sin, positions, cache=None, attn_mask=None):
        if attn_mask is None and getattr(cache, "tail", False) and x.shape[1] > MATMUL_MAX_QUERIES:
            attn_mask = causal_lower_right(x.shape[1], cache.kv_len)
        return super().forward(x, cos, sin, positions, cache, attn_mask)

    def attend(self, q, k, v, attn_mask, is_causal):
        b, _, t, _ = q.shape
        if isinstance(attn_mask, CausalBias):
            if self.n_kv != self.n_heads:  # flash's lower-right path takes equal head counts
                k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
                v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.head_dim ** -0.5)
        if t > MATMUL_MAX_QUERIES or attn_mask is None or attn_mask.dtype != torch.bool:
            return super().attend(q, k, v, attn_mask, is_causal)
        rep = self.n_heads // self.n_kv
        s_len = k.shape[2]
        qg = q.reshape(b, self.n_kv, rep, t, self.head_dim)  # query heads grouped by KV head
        scores = torch.matmul(qg, k.transpose(-1, -2).unsqueeze(2)) * self.head_dim ** -0.5  # [B, nKV, rep, T, S]
        scores = scores.masked_fill(~attn_mask.expand(b, 1, t, s_len).unsqueeze(2), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # softmax in fp32, as HF
        return torch.matmul(probs, v.unsqueeze(2)).reshape(b, self.n_heads, t, self.head_dim)


class FusedQKVAttention(DecodeAttention):
    """Attention whose q/k/v projections are one module, `qkv_proj` (outputs [nH hd | nKV hd | nKV hd])."""

    def project_qkv(self, x):
        q_out = self.n_heads * self.head_dim
        kv_out = self.n_kv * self.head_dim
        return self.qkv_proj(x).split([q_out, kv_out, kv_out], dim=-1)


class FusedGeGLU(GeGLU):
    """GeGLU whose gate/up projections are one module, `gate_up_proj` (outputs [gate | up])."""

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


@torch.no_grad()
def fuse_linears(linears: list[nn.Module]) -> nn.Module | None:
    """One module computing torch.cat([m(x) for m in linears], -1) in one matmul; the originals'
    tensors become views of its (non-persistent) tensors. Plain nn.Linear: an nn.Linear over the
    concatenated weight; quantized linears (infer/quantize.py): their class's `fuse`. None when the
    linears cannot be fused (mixed kinds, biases, or a packed layout that does not concatenate)."""
    kinds = {type(m) for m in linears}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if kind is nn.Linear:
        if any(m.bias is not None for m in linears):
            return None
        weight = torch.cat([m.weight.detach() for m in linears], dim=0)
        with torch.device("meta"):
            fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        del fused.weight
        fused.register_buffer("weight", weight)
        lo = 0
        for m in linears:
            n = m.weight.shape[0]
            m.weight = nn.Parameter(weight[lo:lo + n], requires_grad=m.weight.requires_grad)
            lo += n
    else:
        fuse = getattr(kind, "fuse", None)
        fused = fuse(linears) if fuse is not None else None
        if fused is None:
            return None
    for name, t in list(fused.named_buffers(recurse=False)):  # the originals keep the saved names
        fused.register_buffer(name, t, persistent=False)
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
    too); returns the modules changed (0 when already fused, or when the layers cannot be fused)."""
    changed = 0
    for module in list(model.modules()):
        if type(module) in (Attention, DecodeAttention):
            fused = fuse_linears([module.q_proj, module.k_proj, module.v_proj])
            if fused is not None:
                module.__class__ = FusedQKVAttention
                module.qkv_proj = fused
                changed += 1
        elif type(module) is GeGLU:
            fused = fuse_linears([module.gate_proj, module.up_proj])
            if fused is not None:
                module.__class__ = FusedGeGLU
                module.gate_up_proj = fused
                changed += 1
    return changed


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m, (FusedQKVAttention, FusedGeGLU)) for m in model.modules())
