"""Fewer, larger GEMMs for decoding: q/k/v in one matmul and gate/up in one matmul.

At batch 1 a decode step is a chain of GEMVs; each extra GEMV costs a kernel launch (plus cuBLAS
split-K setup/reduction kernels) on top of its weight reads. Concatenating the weights of the
projections that read the same input saves 3 kernels or more per layer, with the same arithmetic.

Applied from outside the model, like the quantization in infer/quantize.py: `fuse_linears` builds
one module over the concatenated weights of several linears and turns the originals' tensors into
views of it, so the model holds one copy of every weight, keeps its Hugging Face parameter names
and state_dict (the fused module's tensors are non-persistent), and its unfused code path still
computes the same values. The attention and MLP modules get subclasses that call the fused module.

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


class FusedQKVAttention(Attention):
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


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v and gate/up in every layer of `model` in place; returns the modules changed
    (0 when already fused, or when the layers cannot be fused)."""
    changed = 0
    for module in list(model.modules()):
        if type(module) is Attention:
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
