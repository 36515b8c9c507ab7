"""Triton kernels for weight-only int8 / int4 matmuls on CUDA (used by infer/quantize.py).

y[m, n] = sum_k x[m, k] * w[n, k], with w dequantized in registers as it is read:
- int8: w = q[n, k] * s[n] (q int8 [N, K]; the scale is applied once, to the accumulator);
- int4: w = (q[n, k] - 8) * scale[g, n] + zero[g, n] for g = k // group, q packed two per byte
  along k ([N, K/2] uint8, even k in the low nibble), scales_and_zeros [K / group, N, 2] (the
  tinygemm / CPU-kernel layout, so quantization is shared by every device).

One kernel for every M: rows of x in blocks of BLOCK_M; below 16 rows (batch-1 and small-batch
decode) the product is a broadcast multiply and row sum, from 16 up a tensor-core tl.dot. Decode is
bound by weight bytes, so the launch parameters (configs below, measured on an H200 with
benchmarks/quant_speed.py --sections kernels) favour many programs that each stream a few rows.
SPLIT_K > 1 splits the reduction across programs for matrices with few output rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _wq_matmul_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, k_span, stride_xm, stride_wn, stride_ym,
                      BITS: tl.constexpr, GROUP: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, k_span, BLOCK_K):
        k0 = pid_k * k_span + kk
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None], other=0.0)
        if BITS == 8:
            w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :], mask=n_ok[:, None], other=0)
            w = w.to(tl.float32)
        else:
            offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            b = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_b[None, :], mask=n_ok[:, None], other=0)
            q = tl.reshape(tl.join(b & 0xF, b >> 4), (BLOCK_N, BLOCK_K)).to(tl.float32)  # [BN, BK]
            NG: tl.constexpr = BLOCK_K // GROUP if BLOCK_K >= GROUP else 1
            GS: tl.constexpr = GROUP if BLOCK_K >= GROUP else BLOCK_K
            offs_g = k0 // GROUP + tl.arange(0, NG)
            sz = s_ptr + offs_g[None, :] * (2 * N) + offs_n[:, None] * 2  # [BN, NG]
            scale = tl.load(sz, mask=n_ok[:, None], other=0.0).to(tl.float32)
            zero = tl.load(sz + 1, mask=n_ok[:, None], other=0.0).to(tl.float32)
            w = tl.reshape(q, (BLOCK_N, NG, GS)) - 8.0
            w = w * scale[:, :, None] + zero[:, :, None]
            w = tl.reshape(w, (BLOCK_N, BLOCK_K))
        if BLOCK_M >= 16:
            acc += tl.dot(x.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)))
        else:
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w[None, :, :], axis=2)
    if BITS == 8:
        acc *= tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    # SPLIT_K > 1: each split writes its own fp32 partial sums [SPLIT_K, M, N], added up afterwards
    # (a fixed order, unlike atomics: the same input gives the same output every time).
    y = y_ptr + pid_k * M * N + offs_m[:, None] * stride_ym + offs_n[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def pick_config(m: int, n: int, k: int, bits: int, group: int) -> dict:
    """Launch parameters for one matmul shape."""
    if m >= 16:  # tensor cores: prefill, verification passes, large batches
        block_m = 16 if m <= 16 else (32 if m <= 64 else 64)
        return dict(BLOCK_M=block_m, BLOCK_N=64, BLOCK_K=_block_k(k, group, 64), SPLIT_K=1, num_warps=4)
    block_m = 1 if m == 1 else (2 if m == 2 else (4 if m <= 4 else 8))
    block_n = 8 if block_m <= 2 else 4
    block_k = _block_k(k, group, 256)
    programs = triton.cdiv(n, block_n)
    split = 1
    while programs * split < 1024 and split < 8 and k % (2 * split * block_k) == 0:
        split *= 2  # few output rows: more programs reading in parallel
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split, num_warps=4)


def _block_k(k: int, group: int, want: int) -> int:
    """Largest power of two <= want that divides k (and, for int4, divides or is a multiple of group)."""
    b = want
    while b > 16 and (k % b or (group and b > group and b % group)):
        b //= 2
    return b


def wq_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int,
              bits: int, group: int = 0, config: dict | None = None) -> torch.Tensor:
    """x [M, K] (contiguous, bf16/fp16/fp32) -> [M, N] in x's dtype."""
    m, k = x.shape
    n = out_features
    cfg = dict(config or pick_config(m, n, k, bits, group))
    split = cfg["SPLIT_K"]
    y = torch.empty((split, m, n) if split > 1 else (m, n), device=x.device,
                    dtype=torch.float32 if split > 1 else x.dtype)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), split, triton.cdiv(m, cfg["BLOCK_M"]))
    _wq_matmul_kernel[grid](x, weight, scales, y, m, n, k // split, x.stride(0), weight.stride(0), y.stride(-2),
                            BITS=bits, GROUP=group or k, **cfg)
    return y if split == 1 else y.sum(0).to(x.dtype)
