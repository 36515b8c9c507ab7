"""Weight-only int8 and int4 quantization, applied from outside the model after (or while) loading.

As gpt-fast does it: the model stays a plain Gemma; its `nn.Linear` layers are swapped for the
modules below, which hold quantized weights and call PyTorch's weight-only kernels. Activations,
norms, RoPE, attention and the KV cache keep the model's dtype.

- int8: symmetric, one scale per output channel: w[n, k] ~= q[n, k] * s[n], q in [-127, 127].
- int4: grouped along the input dimension (`group_size` 32, 64, 128 or 256; 128 by default), with a
  scale and a zero per group (min/max, asymmetric): w ~= (q - 8) * scale + zero, q in [0, 15]
  (the tinygemm convention, which PyTorch's CPU kernel shares).
- Kernels (measured; docs/inference.md): on the CPU PyTorch's `torch._weight_int8pack_mm` and
  `torch._weight_int4pack_mm_for_cpu`; on CUDA our Triton kernel for int8 (infer/quant_triton.py)
  and tinygemm's `torch._weight_int4pack_mm` for int4, chosen over `_weight_int8pack_mm`,
  gpt-fast's compiled dequantize-then-matmul and our Triton int4 path (INT*_CUDA_KERNEL below).
  Prefills (more than 64 rows) dequantize the weight and use the dtype's own matmul. The packed
  int4 layout is device-specific: quantize on the device the model will run on.
- The tied embedding / output head: int8 per row in both modes (`head=True`, the default). It is
  read in full every decode step as the output head (21% of 2b's bf16 weight bytes, and half of
  them once the layers are int4), so leaving it in bf16 would cap the speed-up; int8 rather than
  int4 because the head is the most sensitive tensor (llama.cpp keeps it above Q4_0 too) and
  because an int8 row is cheap to look up as an embedding. One int8 copy serves both uses.

Shapes a kernel cannot take (int4: in_features not a multiple of the group size, or an output
size the packing cannot tile) fall back to int8 for that layer, with one warning per shape.

`quantize_model(model, mode)` converts a loaded model in place; `quantizer(mode)` gives the
checkpoint loader a per-tensor hook that quantizes each weight as it is streamed from safetensors,
so the full-precision model never exists in memory at once.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("int8", "int4")
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what both int4 kernels accept
DEFAULT_GROUP_SIZE = 128
_ROWS_PER_CHUNK = 4096  # quantize this many rows at a time: fp32 temporaries stay small (7b embedding)

# The CUDA kernels, chosen by measurement on an H200 (docs/inference.md; benchmarks/quant_speed.py
# --sections kernels); read when a module is built, the alternatives stay selectable for that
# benchmark. int8: "triton" = infer/quant_triton.py, "int8pack" = torch._weight_int8pack_mm,
# "dequant" = F.linear on the weight converted to the activation dtype (gpt-fast; inductor fuses the
# conversion into its matmul under torch.compile). int4: "tinygemm" = torch._weight_int4pack_mm
# (bf16; weights packed by _convert_weight_to_int4pack), "triton" = infer/quant_triton.py.
INT8_CUDA_KERNEL = "triton"
INT4_CUDA_KERNEL = "tinygemm"
# PyTorch's CPU kernels are fast for decode-sized inputs; past this many rows (prefill) an int8
# weight is dequantized once and multiplied by the activation dtype's own matmul.
_CPU_PACKED_MAX_ROWS = 64


def check_mode(mode: str | None, group_size: int = DEFAULT_GROUP_SIZE) -> None:
    """One clear error for a bad --quantize / --group-size."""
    if mode is None:
        return
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; choose int8 or int4")
    if mode == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group size {group_size} is not supported by the int4 kernels; "
                         f"choose one of {', '.join(map(str, INT4_GROUP_SIZES))}")


# ---- quantizing one weight --------------------------------------------------------------------

@torch.no_grad()
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q int8 [N, K], scales [N] in w's dtype), w ~= q * scales[:, None]."""
    n = w.shape[0]
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scales = torch.empty(n, dtype=w.dtype, device=w.device)
    tiny = torch.finfo(w.dtype).tiny
    for lo in range(0, n, _ROWS_PER_CHUNK):
        wc = w[lo:lo + _ROWS_PER_CHUNK].float()
        # The scale is rounded to the storage dtype first, so q is chosen for the scale used.
        s = (wc.abs().amax(dim=1) / 127).clamp(min=tiny).to(w.dtype)
        q[lo:lo + _ROWS_PER_CHUNK] = (wc / s.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
        scales[lo:lo + _ROWS_PER_CHUNK] = s
    return q, scales


@torch.no_grad()
def quantize_int4(w: torch.Tensor, group_size: int, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q int32 [N, K] in 0..15, scales_and_zeros [K / group_size, N, 2] in scale_dtype),
    w ~= (q - 8) * scale + zero per group of `group_size` inputs (the tinygemm convention)."""
    n, k = w.shape
    q = torch.empty(w.shape, dtype=torch.int32, device=w.device)
    sz = torch.empty(n, k // group_size, 2, dtype=scale_dtype, device=w.device)
    for lo in range(0, n, _ROWS_PER_CHUNK):
        wg = w[lo:lo + _ROWS_PER_CHUNK].float().reshape(-1, k // group_size, group_size)
        lo_v, hi_v = wg.amin(dim=-1), wg.amax(dim=-1)
        scale = ((hi_v - lo_v) / 15).clamp(min=1e-6).to(scale_dtype).float()
        zero = (lo_v + 8 * scale).to(scale_dtype).float()
        qc = ((wg - zero[..., None]) / scale[..., None] + 8).round().clamp(0, 15)
        q[lo:lo + _ROWS_PER_CHUNK] = qc.reshape(-1, k).to(torch.int32)
        sz[lo:lo + _ROWS_PER_CHUNK] = torch.stack([scale, zero], dim=-1).to(scale_dtype)
    return q, sz.transpose(0, 1).contiguous()


def _int4_layout(out_features: int, in_features: int, group_size: int, layout: str) -> int | None:
    """inner_k_tiles for the packed layout (0: none), or None when the int4 kernel cannot take this shape."""
    if in_features % group_size:
        return None
    if layout == "plain":
        return 0  # our Triton kernel: k in tiles of at most one group
    if layout == "tinygemm":  # n in tiles of 8, k in tiles of inner_k_tiles * 16
        if out_features % 8:
            return None
        return next((t for t in (8, 4, 2) if in_features % (t * 16) == 0), None)
    return 8 if out_features % 16 == 0 else None  # the CPU packing needs n % 16


# ---- modules ------------------------------------------------------------------------------------

def _flat(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.reshape(-1, k).contiguous()


class Int8Linear(nn.Module):
    """y = x @ (q * s)^T with q int8 [N, K] (`weight`) and s [N] (`scales`, the activation dtype)."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.cuda_kernel = INT8_CUDA_KERNEL  # the layout is the same everywhere: the module may move
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8Linear":
        return cls(*quantize_int8(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = self.scales if self.scales.dtype == x.dtype else self.scales.to(x.dtype)
        xf = _flat(x, self.in_features)
        if x.is_cuda and self.cuda_kernel == "triton":
            from codegemma.infer.quant_triton import wq_matmul

            out = wq_matmul(xf, self.weight, scales, self.out_features, bits=8)
        elif x.is_cuda and self.cuda_kernel == "int8pack":
            out = torch._weight_int8pack_mm(xf, self.weight, scales)
        elif x.is_cuda or xf.shape[0] > _CPU_PACKED_MAX_ROWS:  # CUDA "dequant", or a CPU prefill
            return F.linear(x, self.weight.to(x.dtype)) * scales
        else:  # the CPU kernel is vectorized for 16-bit activations only (fp32: ~10x slower)
            xb = xf.to(torch.bfloat16) if xf.dtype == torch.float32 else xf
            out = torch._weight_int8pack_mm(xb, self.weight, scales.to(xb.dtype)).to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    @classmethod
    def fuse(cls, linears: list["Int8Linear"]) -> "Int8Linear":
        """One Int8Linear over the concatenated outputs; the originals' buffers become views of it."""
        fused = cls(torch.cat([m.weight for m in linears]), torch.cat([m.scales for m in linears]))
        _rebind_as_views(linears, fused, ("weight", "scales"), dims=(0, 0))
        return fused

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int4Linear(nn.Module):
    """y = x @ dequant(W)^T with W packed for the device's int4 kernel (`weight`) and
    `scales_and_zeros` [K / group_size, N, 2]. `layout`: "plain" (CUDA, our Triton kernel) uint8
    [N, K/2], two values per byte, even k in the low nibble; "tinygemm" (CUDA)
    torch._convert_weight_to_int4pack's tiles; "cpu" torch._convert_weight_to_int4pack_for_cpu's."""

    def __init__(self, weight: torch.Tensor, scales_and_zeros: torch.Tensor, in_features: int,
                 out_features: int, group_size: int, layout: str):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.layout = layout
        self.register_buffer("weight", weight)
        self.register_buffer("scales_and_zeros", scales_and_zeros)

    def _apply(self, fn, recurse=True):
        # .to() / .cuda() / .cpu(): the packing is device-specific, so a move would corrupt the weights
        if fn(torch.empty(0, device=self.weight.device)).device != self.weight.device:
            raise ValueError(f"int4 weights are packed for {self.weight.device}; quantize the model on the "
                             "device it will run on (codegemma.load(..., device=..., quantize=...))")
        return super()._apply(fn, recurse)

    @classmethod
    def from_float(cls, w: torch.Tensor, group_size: int) -> "Int4Linear | None":
        """None when the kernels cannot take w's shape (the caller falls back to int8)."""
        n, k = w.shape
        layout = "cpu" if not w.is_cuda else ("tinygemm" if INT4_CUDA_KERNEL == "tinygemm" else "plain")
        tiles = _int4_layout(n, k, group_size, layout)
        if tiles is None:
            return None
        if layout == "tinygemm":  # bf16 scales; even k in the high nibble
            q, sz = quantize_int4(w, group_size, torch.bfloat16)
            packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
        elif layout == "plain":
            q, sz = quantize_int4(w, group_size, w.dtype)
            packed = (q[:, ::2] | q[:, 1::2] << 4).to(torch.uint8)
        else:
            q, sz = quantize_int4(w, group_size, torch.bfloat16)
            packed = torch._convert_weight_to_int4pack_for_cpu(q, tiles)
        return cls(packed, sz, k, n, group_size, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _flat(x, self.in_features)
        # A part of a fused module holds a strided view of the fused scales; the kernels want them dense.
        sz = self.scales_and_zeros.contiguous()
        if self.layout == "tinygemm":
            from codegemma.infer.quant_triton import DOT_MAX_ROWS

            if xf.shape[0] > DOT_MAX_ROWS:  # prefill: tinygemm is slow there, cuBLAS on the dequantized weight is not
                out = F.linear(xf, dequantize_tinygemm(self.weight, sz, self.group_size, xf.dtype))
            else:  # computes in bf16
                out = torch._weight_int4pack_mm(xf.to(torch.bfloat16), self.weight, self.group_size, sz).to(x.dtype)
        elif self.layout == "plain":
            from codegemma.infer.quant_triton import wq_matmul

            out = wq_matmul(xf, self.weight, sz, self.out_features, bits=4, group=self.group_size)
        else:  # the CPU kernel computes in bf16 (its fp32 path is not vectorized)
            out = torch._weight_int4pack_mm_for_cpu(xf.to(torch.bfloat16), self.weight, self.group_size,
                                                    sz).to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    @classmethod
    def fuse(cls, linears: list["Int4Linear"]) -> "Int4Linear | None":
        """Concatenate packed weights along the output dimension: valid when every part but the last
        fills whole tiles of the packed layout (64 rows on the CPU, 8 for tinygemm); else None."""
        first = linears[0]
        tile = {"cpu": 64, "tinygemm": 8, "plain": 1}[first.layout]
        if any(m.out_features % tile for m in linears[:-1]) or \
                len({(m.group_size, m.in_features, m.layout, m.weight.shape[1:]) for m in linears}) != 1:
            return None
        fused = cls(torch.cat([m.weight for m in linears]), torch.cat([m.scales_and_zeros for m in linears], dim=1),
                    first.in_features, sum(m.out_features for m in linears), first.group_size, first.layout)
        _rebind_as_views(linears, fused, ("weight", "scales_and_zeros"), dims=(0, 1))
        return fused

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 group_size={self.group_size}, layout={self.layout}")


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Every 4-bit value of a packed tensor, in memory order (low nibble of each byte first)."""
    b = packed.contiguous().view(torch.uint8).reshape(-1, 1)
    return torch.cat([b & 0xF, b >> 4], dim=1).reshape(-1)


@functools.cache
def _tinygemm_order(device: str, tiles: int) -> torch.Tensor:
    """For one tinygemm tile (8 rows x tiles * 16 columns): the nibble slot that holds element
    (r, c), at index r * tiles * 16 + c. Read off the packing op itself by packing the hex digits of
    each element's position, so no knowledge of the layout is assumed."""
    rows, cols = 8, tiles * 16
    pos = torch.arange(rows * cols, device=device)
    slot_to_pos = torch.zeros_like(pos)
    for digit in range(3):  # positions < 16 ** 3
        q = ((pos >> (4 * digit)) & 0xF).reshape(rows, cols).to(torch.int32)
        packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
        slot_to_pos += _nibbles(packed).long() << (4 * digit)
    order = torch.empty_like(pos)
    order[slot_to_pos] = torch.arange(rows * cols, device=device)
    return order


def dequantize_tinygemm(packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int,
                        dtype: torch.dtype) -> torch.Tensor:
    """The [N, K] weight of a tinygemm-packed int4 tensor ([N/8, K/(tiles*16), 32, tiles/2] int32)."""
    nb, kb, _, half_tiles = packed.shape
    tiles = half_tiles * 2
    cols = tiles * 16
    q = _nibbles(packed).reshape(nb, kb, 8 * cols)[:, :, _tinygemm_order(str(packed.device), tiles)]
    q = q.reshape(nb, kb, 8, cols).permute(0, 2, 1, 3).reshape(nb * 8, kb * cols)  # [N, K]
    n, k = q.shape
    scale, zero = scales_and_zeros[..., 0].t().to(dtype), scales_and_zeros[..., 1].t().to(dtype)  # [N, G]
    w = q.reshape(n, k // group_size, group_size).to(dtype).sub_(8)  # in place: few temporaries
    return w.mul_(scale[..., None]).add_(zero[..., None]).reshape(n, k)


def _rebind_as_views(linears, fused: nn.Module, names: tuple[str, ...], dims: tuple[int, ...]) -> None:
    """Point each part's buffers at slices of the fused module's, so one copy of the weights exists."""
    for name, dim in zip(names, dims):
        lo = 0
        for m in linears:
            n = getattr(m, name).shape[dim]
            setattr(m, name, getattr(fused, name).narrow(dim, lo, n))
            lo += n


class Int8Embedding(nn.Module):
    """The tied embedding as int8 rows: lookup dequantizes the rows it reads."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].to(self.scales.dtype) * self.scales[ids].unsqueeze(-1)


@functools.cache
def _quantized_head_class(base: type) -> type:
    """A subclass of the model's class whose output head is `self.lm_head` (the int8 tied weights)."""

    class QuantizedHead(base):
        def logits(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.lm_head(hidden)

    QuantizedHead.__name__ = QuantizedHead.__qualname__ = f"{base.__name__}QuantizedHead"
    return QuantizedHead


# ---- applying it to a model ---------------------------------------------------------------------

def quantizer(mode: str, group_size: int = DEFAULT_GROUP_SIZE, head: bool = True
              ) -> Callable[[nn.Module], Callable[[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """For `load_model(..., prepare=...)`: given the model (on the meta device), returns the hook
    that receives each weight as it is read (on the target device) and swaps in a quantized module
    for it; the hook returns the state-dict entries that replace the weight."""
    check_mode(mode, group_size)

    def prepare(model: nn.Module):
        warned: set[tuple[int, int]] = set()

        def hook(name: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            if leaf == "weight" and type(module) is nn.Linear:
                new = None
                if mode == "int4":
                    new = Int4Linear.from_float(t, group_size)
                    if new is None and tuple(t.shape) not in warned:
                        warned.add(tuple(t.shape))
                        warnings.warn(f"int4: weights of shape {list(t.shape)} (e.g. {owner}) do not fit the int4 "
                                      f"kernels with group size {group_size} (in_features must be a multiple of it); "
                                      "they use int8", stacklevel=2)
                new = new or Int8Linear.from_float(t)
                model.set_submodule(owner, new)
                return {f"{owner}.{k}": v for k, v in new.state_dict().items()}
            if leaf == "weight" and head and type(module) is nn.Embedding and owner == "embed_tokens":
                q, s = quantize_int8(t)
                model.embed_tokens = Int8Embedding(q, s)
                model.lm_head = Int8Linear(q, s)
                for b in ("weight", "scales"):  # an alias of embed_tokens: not saved twice
                    model.lm_head.register_buffer(b, getattr(model.lm_head, b), persistent=False)
                model.__class__ = _quantized_head_class(type(model))
                return {"embed_tokens.weight": q, "embed_tokens.scales": s}
            return {name: t}

        return hook

    return prepare


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE, *,
                   head: bool = True) -> nn.Module:
    """Swap every linear layer of a loaded model (and, with head=True, the tied embedding/output
    head) for its quantized form, in place, one weight at a time. Returns the model."""
    from codegemma.infer.fuse import is_fused

    if is_fused(model):
        raise ValueError("quantize the model before fusing its projections (the Engine fuses on GPU)")
    if is_quantized(model):
        raise ValueError("the model is already quantized")
    hook = quantizer(mode, group_size, head)(model)
    for name in [n for n, _ in model.named_parameters()]:
        hook(name, model.get_parameter(name).detach())  # the old module is freed on the next swap
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (Int8Linear, Int4Linear, Int8Embedding)) for m in model.modules())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each storage counted once (fused views and the
    tied head share theirs): what one batch-1 decode step reads, bar the embedding lookup."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
