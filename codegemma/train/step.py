"""One micro-batch through the model: masks, the loss module FSDP2 wraps as its root, precision.

Shared by the training loop and benchmarks/train_mfu.py, so the benchmark times the real step.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from codegemma.train.loss import linear_cross_entropy


class CausalLMLoss(nn.Module):
    """Gemma + tied-head cross-entropy in one forward, so FSDP2's root (this module) holds the
    embedding gathered while the loss reads it as the output head."""

    def __init__(self, model: nn.Module, loss_chunk: int = 2048, compile_loss: bool = False):
        super().__init__()
        self.model = model
        self.loss_chunk = loss_chunk
        self.compile_loss = compile_loss

    def forward(self, tokens, labels, positions=None, attn_mask=None, scale: float = 1.0) -> torch.Tensor:
        hidden = self.model.hidden_states(tokens, positions, attn_mask=attn_mask)  # [B,T,H]
        return linear_cross_entropy(hidden, self.model.embed_tokens.weight, labels, scale, self.loss_chunk,
                                    self.compile_loss)


def document_attention_mask(segments: torch.Tensor) -> torch.Tensor | None:
    """[B,T] segment ids -> bool [B,1,T,T] (True = may attend): causal and within one segment.

    Padding (-1) forms its own segment, so its rows are never empty (no NaN), and it has no loss.
    """
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, None, :, None] == segments[:, None, None, :]
    return same & causal


def document_block_mask(segments: torch.Tensor):
    """The same rule as `document_attention_mask`, as a FlexAttention BlockMask: fully masked
    [128 x 128] blocks are skipped, so packed attention costs what its documents need."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segments

    def same_document_causal(b, h, q, kv):
        return (seg[b, q] == seg[b, kv]) & (q >= kv)

    b, t = seg.shape
    return create_block_mask(same_document_causal, b, None, t, t, device=seg.device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The compute dtype of autocast (None = plain fp32). auto: bf16 on CUDA, fp32 on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device, compute_dtype: torch.dtype | None):
    """fp32 master weights, bf16 matmuls: the weights the optimiser updates never lose precision."""
    if compute_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=compute_dtype)


def attention_mask(segments: torch.Tensor, doc_mask: str) -> object:
    """doc_mask: "off" (plain causal), "sdpa" (bool mask) or "flex" (BlockMask)."""
    if doc_mask == "off" or bool((segments == segments[:, :1]).all()):
        return None  # one document per row: the causal fast path is exact
    return document_block_mask(segments) if doc_mask == "flex" else document_attention_mask(segments)


def mask_kind(enabled: bool, device: torch.device, compiled: bool) -> str:
    """FlexAttention where it is fast (CUDA, compiled layers); a bool mask for SDPA elsewhere
    (FlexAttention has no backward on the CPU, and uncompiled it materialises the scores)."""
    if not enabled:
        return "off"
    return "flex" if device.type == "cuda" and compiled else "sdpa"


def forward_backward(module: nn.Module, batches: list[dict[str, torch.Tensor]], scale: float,
                     device: torch.device, compute_dtype: torch.dtype | None, doc_mask: str,
                     sharded: bool = False) -> torch.Tensor:
    """Accumulate gradients of `scale * sum of token losses` over micro-batches; returns that sum.

    doc_mask: see `attention_mask`. Under FSDP2 (`sharded`) gradients are reduce-scattered once,
    after the last micro-batch.
    """
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        batch = to_device(batch, device)
        mask = attention_mask(batch["segments"], doc_mask)
        if sharded:
            module.set_requires_gradient_sync(i == len(batches) - 1)
        with autocast(device, compute_dtype):
            loss = module(batch["tokens"], batch["labels"], batch["positions"], mask, scale)
        loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def optimizer_step(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, grad_clip: float) -> torch.Tensor:
    """Clip the global gradient norm (0 = only measure it), step, clear; returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
