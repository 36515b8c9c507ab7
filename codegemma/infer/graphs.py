"""The decode step (one new token for each active slot), eager or replayed from CUDA graphs.

At batch 1 a 2B model's decode step is ~1.5 ms of weight reads on an H100 but launches ~1000
small kernels; launched one by one from Python the launch time dominates. So on GPU the step is
captured into CUDA graphs with static shapes and replayed:

- the batch is padded up to a bucket (1, 2, 4, 8, ...); padding rows write into a scratch cache
  slot that no request uses, so they never disturb real slots;
- attention reads the first `kv_len` cache positions, with kv_len rounded up to a bucket
  (256, 512, ..., max_len), so a short context does not pay for reading the whole cache;
- mode "compile" first passes the model through torch.compile (inductor fuses the elementwise
  work of RMSNorm, RoPE and GeGLU into few kernels), then captures that; mode "graphs" captures
  the eager kernels. Graphs are captured lazily, one per (batch bucket, kv bucket), sharing one
  memory pool (safe: the logits of one replay are consumed before the next replay).

`verify` is the multi-token step of speculative decoding: each row feeds its next token plus up to
`spec_len` draft tokens at consecutive positions and gets the greedy (argmax) id after each one.
On GPU it is captured too, with a static length spec_len + 1 (rows padded by repeating their last
token at the following positions: those cache entries lie past the row's valid tokens and are
overwritten before they are ever attended). It captures the eager model even in compile mode, so
a new query length never triggers a torch.compile recompile while serving.
"""

from __future__ import annotations

import logging

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from codegemma.infer.kv import SlotView
from codegemma.infer.modes import resolve_decode

log = logging.getLogger(__name__)


# Attention with a mask and several queries per row (prefill, verification): on Hopper PyTorch would
# pick cuDNN, which builds a plan per new shape (tens of ms); the memory-efficient kernel needs none.
MASKED_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _buckets(limit: int, start: int) -> list[int]:
    out, b = [], start
    while b < limit:
        out.append(b)
        b *= 2
    out.append(limit)
    return out


class DecodeRunner:
    def __init__(self, model, cache, *, scratch_slot: int, max_batch: int, mode: str = "eager",
                 min_kv_bucket: int = 256, spec_len: int = 0, max_verify_batch: int = 8):
        mode = resolve_decode(mode, cache.k[0].device)
        self.model, self.cache, self.mode = model, cache, mode
        self.scratch_slot = scratch_slot
        self.batch_buckets = _buckets(max_batch, 1)
        self.kv_buckets = _buckets(cache.max_len, min(min_kv_bucket, cache.max_len))
        self.device = cache.k[0].device
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.spec_len = spec_len
        self.max_verify_batch = min(max_verify_batch, max_batch)
        self.verify_buckets = _buckets(self.max_verify_batch, 1)
        self._vgraphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._fn = model
        if mode != "eager":
            if mode == "compile":
                self._fn = torch.compile(model)
            nb = self.batch_buckets[-1]
            # Static inputs, one [3, nb] block (tokens, positions, slots) filled by one copy per step
            # from a pinned host twin; graphs read the views below in place.
            self._block = torch.zeros(3, nb, dtype=torch.long, device=self.device)
            self._tokens = self._block[0].unsqueeze(1)  # [nb, 1]
            self._positions = self._block[1].unsqueeze(1)  # [nb, 1]
            self._slots = self._block[2]  # [nb]
            self._host = torch.zeros(3, nb, dtype=torch.long).pin_memory()
            self._host_np = self._host.numpy()
            self._pool = torch.cuda.graph_pool_handle()
            if spec_len > 0:
                vb, t = self.verify_buckets[-1], spec_len + 1
                self._vblock = torch.zeros(2, vb, t, dtype=torch.long, device=self.device)  # tokens, positions
                self._vslots = torch.zeros(vb, dtype=torch.long, device=self.device)
                self._vhost = torch.zeros(2 * vb * t + vb, dtype=torch.long).pin_memory()
                self._vhost_np = self._vhost.numpy()

    @staticmethod
    def _bucket(buckets: list[int], n: int) -> int:
        for b in buckets:
            if b >= n:
                return b
        raise ValueError(f"{n} exceeds the largest bucket {buckets[-1]}")

    @torch.inference_mode()
    def __call__(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        """One token per row at `positions` in cache rows `slots` -> logits [B, V] (valid until the
        next call)."""
        b = len(tokens)
        kv_need = max(positions) + 1
        if self.mode == "eager":
            t = torch.tensor(tokens, device=self.device)[:, None]
            p = torch.tensor(positions, device=self.device)[:, None]
            s = torch.tensor(slots, device=self.device)
            return self.model(t, p, cache=SlotView(self.cache, s, kv_need))[:, 0]
        bb = self._bucket(self.batch_buckets, b)
        kb = self._bucket(self.kv_buckets, kv_need)
        host = self._host_np  # numpy view of pinned memory: cheap element writes
        host[0, :b], host[1, :b], host[2, :b] = tokens, positions, slots
        host[0, b:bb], host[1, b:bb], host[2, b:bb] = 0, 0, self.scratch_slot  # padding rows
        self._block[:, :bb].copy_(self._host[:, :bb], non_blocking=True)
        graph = self._graphs.get((bb, kb))
        if graph is None:
            graph = self._capture(bb, kb)
        graph[0].replay()
        return graph[1][:b, 0]

    def _call(self, bb: int, kb: int) -> torch.Tensor:
        return self._fn(self._tokens[:bb], self._positions[:bb], cache=SlotView(self.cache, self._slots[:bb], kb))

    def _capture(self, bb: int, kb: int):
        # Warm up (and compile) on a side stream with every row pointed at the scratch slot, so
        # these untracked runs write nowhere that matters; then capture with the same shapes.
        real = self._block[:, :bb].clone()
        self._block[:2, :bb].zero_()
        self._block[2, :bb].fill_(self.scratch_slot)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3 if self.mode == "compile" else 1):
                self._call(bb, kb)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._call(bb, kb)
        self._block[:, :bb].copy_(real)
        self._graphs[(bb, kb)] = (graph, out)
        log.info("captured decode graph batch=%d kv_len=%d (%s)", bb, kb, self.mode)
        return self._graphs[(bb, kb)]

    def num_graphs(self) -> int:
        return len(self._graphs) + len(self._vgraphs)

    # ---- speculative verification ------------------------------------------------------------------
    @torch.inference_mode()
    def verify(self, rows: list[list[int]], positions: list[int], slots: list[int]) -> list[list[int]]:
        """rows[i] = [next token, draft...] (1 + at most spec_len ids) fed at positions[i], ... of
        cache row slots[i] -> the greedy id after each fed token, len(rows[i]) per row. The caller
        guarantees positions[i] + spec_len < cache length and len(rows) <= max_verify_batch."""
        b = len(rows)
        t = self.spec_len + 1 if self.mode != "eager" else max(len(r) for r in rows)
        toks = [r + [r[-1]] * (t - len(r)) for r in rows]
        pos = [[p + j for j in range(t)] for p in positions]
        kv_need = max(positions) + t
        if self.mode == "eager":
            tt = torch.tensor(toks, device=self.device)
            pp = torch.tensor(pos, device=self.device)
            ss = torch.tensor(slots, device=self.device)
            with sdpa_kernel(MASKED_SDPA_BACKENDS):
                logits = self.model(tt, pp, cache=SlotView(self.cache, ss, kv_need))
            ids = logits.float().argmax(-1).tolist()  # as sample() picks greedy rows
            return [row[:len(r)] for row, r in zip(ids, rows)]
        bb = self._bucket(self.verify_buckets, b)
        kb = self._bucket(self.kv_buckets, kv_need)
        vb = self.verify_buckets[-1]
        host = self._vhost_np
        blk = host[:2 * vb * t].reshape(2, vb, t)
        blk[0, :b], blk[1, :b] = toks, pos
        blk[0, b:bb] = 0
        blk[1, b:bb] = range(t)  # padding rows: positions 0.. of the scratch slot
        host[2 * vb * t:2 * vb * t + b] = slots
        host[2 * vb * t + b:2 * vb * t + bb] = self.scratch_slot
        self._vblock.view(-1).copy_(self._vhost[:2 * vb * t], non_blocking=True)
        self._vslots.copy_(self._vhost[2 * vb * t:], non_blocking=True)
        graph = self._vgraphs.get((bb, kb))
        if graph is None:
            graph = self._capture_verify(bb, kb)
        graph[0].replay()
        ids = graph[1][:b].tolist()
        return [row[:len(r)] for row, r in zip(ids, rows)]

    def _verify_call(self, bb: int, kb: int) -> torch.Tensor:
        with sdpa_kernel(MASKED_SDPA_BACKENDS):
            logits = self.model(self._vblock[0, :bb], self._vblock[1, :bb],
                                cache=SlotView(self.cache, self._vslots[:bb], kb))
        return logits.argmax(-1)  # [bb, T]; argmax of bf16 = argmax of its float values

    def _capture_verify(self, bb: int, kb: int):
        real = (self._vblock[:, :bb].clone(), self._vslots[:bb].clone())
        t = self._vblock.shape[-1]
        self._vblock[0, :bb].zero_()
        self._vblock[1, :bb].copy_(torch.arange(t, device=self.device))
        self._vslots[:bb].fill_(self.scratch_slot)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._verify_call(bb, kb)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._verify_call(bb, kb)
        self._vblock[:, :bb].copy_(real[0])
        self._vslots[:bb].copy_(real[1])
        self._vgraphs[(bb, kb)] = (graph, out)
        log.info("captured verify graph batch=%d len=%d kv_len=%d", bb, t, kb)
        return self._vgraphs[(bb, kb)]
