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
