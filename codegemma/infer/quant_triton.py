"""Triton kernels for weight-only int8 / int4 matmuls on CUDA (used by infer/quantize.py).

y[m, n] = sum_k x[m, k] * w[n, k], with w dequantized in registers as it is read:
- int8: w = q[n, k] * s[n] (q int8 [N, K]; the scale is applied once, to the sums);
- int4: w = (q[n, k] - 8) * scale[g, n] + zero[g, n] for g = k // group, q packed two per byte
  along k ([N, K/2] uint8, even k in the low nibble), scales_and_zeros [K / group, N, 2] (the
  tinygemm / CPU-kernel layout, so quantization is shared by every device).

Three paths by the number of rows M:
- M <= 8 (decode): a GEMV that streams BLOCK_N rows of weights per program and accumulates
  elementwise products in registers, reducing once at the end (no reduction inside the loop);
  the loop is software-pipelined (tl.range num_stages) so several tiles are in flight per program;
  int4 bytes are not interleaved: x is split into even and odd k in registers instead.
- 8 < M <= 64 (verification passes, batches): the same tiles through tensor-core tl.dot.
- M > 64 (prefill): the weight is dequantized to the activation dtype once and cuBLAS does the
  product (a 2048-row prefill is compute-bound, where the extra weight bytes do not matter).
SPLIT_K > 1 splits the reduction over programs for matrices with few output rows; each split
writes its own fp32 partial sums, added in a fixed order (the same input gives the same output).
Launch parameters: pick_config, from sweeps on an H200 (benchmarks/quant_speed.py --sweep).

Measured there (7b shapes, batch 1): int8 reads 2.4-3.4 TB/s on the large matrices, 1.3-1.8x
faster than bf16 cuBLAS; int4 reads only 0.6-1.0 TB/s, half of tinygemm's speed, so int4 on CUDA
uses tinygemm (infer/quantize.py) and this int4 path stays selectable (INT4_CUDA_KERNEL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

GEMV_MAX_ROWS = 8
DOT_MAX_ROWS = 64


@triton.jit
def _wq_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, k_span, stride_xm, stride_wn, stride_ym,
               BITS: tl.constexpr, GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, STAGES: tl.constexpr, DOT: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    KW: tl.constexpr = BLOCK_K // 2 if BITS == 4 else BLOCK_K  # weight elements (bytes) per tile row
    if DOT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc3 = tl.zeros((BLOCK_M, BLOCK_N, KW), dtype=tl.float32)
    k_first = pid_k * k_span
    for kk in tl.range(0, k_span, BLOCK_K, num_stages=STAGES):
        k0 = k_first + kk
        offs_w = (k0 // 2 if BITS == 4 else k0) + tl.arange(0, KW)
        wt = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :], mask=n_ok[:, None], other=0)
        if BITS == 8:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None], other=0.0)
            w = wt.to(tl.float32)
            if DOT:
                acc += tl.dot(x.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)))
            else:
                acc3 += x.to(tl.float32)[:, None, :] * w[None, :, :]
        else:
            # one group per tile (BLOCK_K <= GROUP): one scale and zero per row
            g = k0 // GROUP
            scale = tl.load(s_ptr + g * (2 * N) + offs_n * 2, mask=n_ok, other=0.0).to(tl.float32)
            zero = tl.load(s_ptr + g * (2 * N) + offs_n * 2 + 1, mask=n_ok, other=0.0).to(tl.float32)
            w_lo = ((wt & 0xF).to(tl.float32) - 8.0) * scale[:, None] + zero[:, None]
            w_hi = ((wt >> 4).to(tl.float32) - 8.0) * scale[:, None] + zero[:, None]
            offs_k = k0 + tl.arange(0, BLOCK_K)  # contiguous, then even / odd k in registers
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None], other=0.0)
            x_lo, x_hi = tl.split(tl.reshape(x, (BLOCK_M, KW, 2)))
            if DOT:
                acc += tl.dot(x_lo.to(tl.bfloat16), tl.trans(w_lo.to(tl.bfloat16)))
                acc += tl.dot(x_hi.to(tl.bfloat16), tl.trans(w_hi.to(tl.bfloat16)))
            else:
                acc3 += x_lo.to(tl.float32)[:, None, :] * w_lo[None, :, :] + \
                    x_hi.to(tl.float32)[:, None, :] * w_hi[None, :, :]
    if not DOT:
        acc = tl.sum(acc3, axis=2)
    if BITS == 8:
        acc *= tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y = y_ptr + pid_k * M * N + offs_m[:, None] * stride_ym + offs_n[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _dequant_int4_kernel(w_ptr, s_ptr, out_ptr, N, K, GROUP: tl.constexpr, BLOCK: tl.constexpr):
    """out [N, K] = (q - 8) * scale + zero, one row-block of K/2 bytes per program."""
    n = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # byte index within the row
    ok = j < K // 2
    b = tl.load(w_ptr + n * (K // 2) + j, mask=ok, other=0)
    g = (2 * j) // GROUP
    scale = tl.load(s_ptr + g * (2 * N) + n * 2, mask=ok, other=0.0).to(tl.float32)
    zero = tl.load(s_ptr + g * (2 * N) + n * 2 + 1, mask=ok, other=0.0).to(tl.float32)
    lo = ((b & 0xF).to(tl.float32) - 8.0) * scale + zero
    hi = ((b >> 4).to(tl.float32) - 8.0) * scale + zero
    tl.store(out_ptr + n * K + 2 * j, lo.to(out_ptr.dtype.element_ty), mask=ok)
    tl.store(out_ptr + n * K + 2 * j + 1, hi.to(out_ptr.dtype.element_ty), mask=ok)


def dequantize_int4(weight: torch.Tensor, scales_and_zeros: torch.Tensor, k: int, group: int,
                    dtype: torch.dtype) -> torch.Tensor:
    n = weight.shape[0]
    out = torch.empty(n, k, device=weight.device, dtype=dtype)
    block = 1024
    _dequant_int4_kernel[(n, triton.cdiv(k // 2, block))](weight, scales_and_zeros, out, n, k,
                                                         GROUP=group, BLOCK=block)
    return out


def pick_config(m: int, n: int, k: int, bits: int, group: int) -> dict:
    """Launch parameters for one matmul shape (rows m <= DOT_MAX_ROWS)."""
    if m > GEMV_MAX_ROWS:  # tensor cores
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n, block_k = 64, _block_k(k, group, 128 if bits == 4 else 64)
        dot = True
    else:
        block_m = 1 if m == 1 else (2 if m == 2 else (4 if m <= 4 else 8))
        block_n = 16 if block_m <= 2 else 8
        block_k = _block_k(k, group, 256)
        dot = False
    programs = triton.cdiv(n, block_n)
    split = 1
    while programs * split < 512 and split < 8 and k % (2 * split * block_k) == 0:
        split *= 2  # few output rows: more programs reading in parallel
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split, STAGES=4 if bits == 4 else 3,
                DOT=dot, num_warps=4)


def _block_k(k: int, group: int, want: int) -> int:
    """Largest power of two <= want that divides k (int4: and divides the group, one group per tile)."""
    b = want
    while b > 16 and (k % b or (group and group % b)):
        b //= 2
    return b


def wq_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int,
              bits: int, group: int = 0, config: dict | None = None) -> torch.Tensor:
    """x [M, K] (contiguous, bf16/fp16/fp32) -> [M, N] in x's dtype."""
    m, k = x.shape
    n = out_features
    if m > DOT_MAX_ROWS and config is None:
        if bits == 8:
            return F.linear(x, weight.to(x.dtype)) * scales.to(x.dtype)
        return F.linear(x, dequantize_int4(weight, scales, k, group, x.dtype))
    cfg = dict(config or pick_config(m, n, k, bits, group))
    split = cfg["SPLIT_K"]
    if k % (cfg["BLOCK_K"] * split) or (bits == 4 and group % cfg["BLOCK_K"]):
        raise ValueError(f"launch config {cfg} does not tile k={k} (group {group})")
    y = torch.empty((split, m, n) if split > 1 else (m, n), device=x.device,
                    dtype=torch.float32 if split > 1 else x.dtype)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), split, triton.cdiv(m, cfg["BLOCK_M"]))
    _wq_kernel[grid](x, weight, scales, y, m, n, k // split, x.stride(0), weight.stride(0), y.stride(-2),
                     BITS=bits, GROUP=group or k, **cfg)
    return y if split == 1 else y.sum(0).to(x.dtype)
