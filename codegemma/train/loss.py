"""Next-token cross-entropy through the tied output head, in chunks of tokens.

The 2B model's logits for one 8192-token row are 8192 x 256000: 4 GB in bf16, 8 GB in fp32, and
autograd would keep them for the backward pass. `LinearCrossEntropy` never holds more than one
chunk of logits: the forward pass computes each chunk's loss *and* its gradients (softmax minus
one-hot), keeps only d(hidden) [N,H] and d(weight) [V,H], and the backward pass scales them by
the incoming gradient. Same flops as the plain way (one forward and two backward matmuls per
chunk), a small fraction of its memory.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from codegemma.train.data import IGNORE


def _chunk_loss_and_grads(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor):
    """h [n,H] (compute dtype), w [V,H] (compute dtype), y [n] -> (sum of losses, dh [n,H], dw [V,H] fp32),
    the gradients of the *sum* (the caller scales them: no float argument, so one compiled graph)."""
    logits = (h @ w.t()).float()  # [n, V]
    lse = torch.logsumexp(logits, dim=-1)
    valid = y != IGNORE
    safe_y = torch.where(valid, y, torch.zeros_like(y))
    target = logits.gather(1, safe_y[:, None]).squeeze(1)
    loss = ((lse - target) * valid).sum()
    # d(sum loss)/d(logits) = softmax - onehot, zero on ignored rows.
    grad = logits.sub_(lse[:, None]).exp_()  # in place: one [n,V] fp32 buffer per chunk
    grad.scatter_add_(1, safe_y[:, None], torch.full_like(lse[:, None], -1.0))
    grad *= valid.float()[:, None]
    grad = grad.to(h.dtype)
    return loss, grad @ w, (grad.t() @ h).float()


@functools.cache
def _compiled_chunk():
    """The chunk step compiled once per process: its fp32 pointwise passes over [n,V] fuse into a few kernels."""
    return torch.compile(_chunk_loss_and_grads, dynamic=False)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk: int, scale: float, compute_dtype, compiled: bool):
        h = hidden.reshape(-1, hidden.shape[-1]).to(compute_dtype)
        y = labels.reshape(-1)
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        dh = torch.empty_like(h)
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        step = _compiled_chunk() if compiled else _chunk_loss_and_grads
        for s in range(0, h.shape[0], chunk):
            loss, dh_c, dw_c = step(h[s:s + chunk], w, y[s:s + chunk])
            total += loss
            dh[s:s + chunk] = dh_c
            dw += dw_c
        dh *= scale
        dw *= scale
        ctx.save_for_backward(dh, dw)
        ctx.shapes = (hidden.shape, hidden.dtype, weight.dtype)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        dh, dw = ctx.saved_tensors
        shape, h_dtype, w_dtype = ctx.shapes
        d_hidden = (dh * grad_out.to(dh.dtype)).to(h_dtype).reshape(shape)
        d_weight = (dw * grad_out).to(w_dtype)
        return d_hidden, d_weight, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         scale: float = 1.0, chunk: int = 2048, compiled: bool = False) -> torch.Tensor:
    """scale * sum over non-ignored tokens of CE(hidden @ weight.T, labels).

    hidden [B,T,H], weight [V,H], labels [B,T] (IGNORE = no loss). The matmuls run in hidden's
    dtype (bf16 under autocast), softmax and the sum in fp32. Pass scale = 1 / (tokens with a
    target) for the mean. Differentiable in hidden and weight. `compiled`: torch.compile the chunk.
    """
    compute = hidden.dtype
    if torch.is_autocast_enabled(hidden.device.type):
        compute = torch.get_autocast_dtype(hidden.device.type)
    with torch.autocast(hidden.device.type, enabled=False):
        if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
            return _loss_only(hidden, weight, labels, chunk, compute) * scale
        return _LinearCrossEntropy.apply(hidden, weight, labels, chunk, float(scale), compute, compiled)


def _loss_only(hidden, weight, labels, chunk: int, compute_dtype) -> torch.Tensor:
    h = hidden.reshape(-1, hidden.shape[-1]).to(compute_dtype)
    y = labels.reshape(-1)
    w = weight.to(compute_dtype)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for s in range(0, h.shape[0], chunk):
        logits = (h[s:s + chunk] @ w.t()).float()
        total += F.cross_entropy(logits, y[s:s + chunk], ignore_index=IGNORE, reduction="sum")
    return total


def reference_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of CE over non-ignored tokens from full logits [B,T,V] (used by tests and validation)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
