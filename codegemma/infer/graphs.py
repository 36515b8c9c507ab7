"""The model steps the engine runs, eager or replayed from CUDA graphs: the decode step (one token
per active slot), the verification pass of speculative decoding (several tokens per row) and
short prefill chunks.

At batch 1 a 2B model's decode step is ~1.5 ms of weight reads on an H100 but launches ~1000
small kernels; launched one by one from Python the launch time dominates. So on GPU the steps are
captured into CUDA graphs with static shapes and replayed:

- the batch is padded up to a bucket (1, 2, 4, 8, ...); padding rows write into a scratch cache
  slot that no request uses, so they never disturb real slots;
- attention reads the first `kv_len` cache positions, with kv_len rounded up to a bucket
  (256, 512, ..., max_len), so a short context does not pay for reading the whole cache;
- a row of several tokens is padded to its length bucket by repeating its last token at the
  following positions: those cache entries lie past the row's valid tokens and are overwritten
  before they are ever attended;
- mode "compile" first passes the model through torch.compile (inductor fuses the elementwise
  work of RMSNorm, RoPE and GeGLU into few kernels) for the decode step, then captures that; mode
  "graphs" captures the eager kernels. Multi-token passes (verification, prefill chunks) capture
  the eager model in both modes, so no query length ever triggers a compile.

`warmup()` captures every shape the engine can meet (each batch bucket x kv bucket for decode and
verification, each prefill bucket x kv bucket for prefill chunks) before serving, with a progress
bar: no compile or capture happens during traffic. All graphs share one memory pool (safe: the
output of one replay is consumed before the next replay).
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
PREFILL_BUCKETS = (32, 64, 128, 256)  # prefill chunks up to 256 tokens replay a graph; longer ones run eager


def _buckets(limit: int, start: int) -> list[int]:
    out, b = [], start
    while b < limit:
        out.append(b)
        b *= 2
    out.append(limit)
    return out


def _bucket(buckets, n: int) -> int | None:
    for b in buckets:
        if b >= n:
            return b
    return None


class DecodeRunner:
    def __init__(self, model, cache, *, scratch_slot: int, max_batch: int, mode: str = "eager",
                 min_kv_bucket: int = 256, spec_len: int = 0, max_verify_batch: int = 8,
                 prefill_buckets=PREFILL_BUCKETS):
        mode = resolve_decode(mode, cache.k[0].device)
        self.model, self.cache, self.mode = model, cache, mode
        self.scratch_slot = scratch_slot
        self.batch_buckets = _buckets(max_batch, 1)
        self.kv_buckets = _buckets(cache.max_len, min(min_kv_bucket, cache.max_len))
        self.device = cache.k[0].device
        self.spec_len = spec_len
        self.max_verify_batch = min(max_verify_batch, max_batch)
        self.verify_buckets = _buckets(self.max_verify_batch, 1)
        self.prefill_buckets = tuple(b for b in prefill_buckets if b < cache.max_len) if mode != "eager" else ()
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._fn = model
        if mode != "eager":
            if mode == "compile":
                self._fn = torch.compile(model)
            nb = self.batch_buckets[-1]
            # Static inputs, one [3, nb] block (tokens, positions, slots) filled by one copy per step
            # from a pinned host twin; graphs read the views below in place.
            self._block = torch.zeros(3, nb, dtype=torch.long, device=self.device)
            self._host = torch.zeros(3, nb, dtype=torch.long).pin_memory()
            self._host_np = self._host.numpy()
            # Multi-token passes: [2, rows, T] tokens and positions + [rows] slots, one block.
            rows = max(self.verify_buckets[-1], 1)
            self._t_max = max([spec_len + 1] + list(self.prefill_buckets))
            self._mblock = torch.zeros(2 * rows * self._t_max + rows, dtype=torch.long, device=self.device)
            self._mhost = torch.zeros_like(self._mblock, device="cpu").pin_memory()
            self._mhost_np = self._mhost.numpy()
            self._mrows = rows
            self._pool = torch.cuda.graph_pool_handle()

    # ---- shapes -----------------------------------------------------------------------------------
    def shapes(self) -> list[tuple]:
        """Every (kind, batch bucket, length, kv bucket) a graph exists for once warmed up."""
        if self.mode == "eager":
            return []
        out = [("decode", bb, 1, kb) for bb in self.batch_buckets for kb in self.kv_buckets]
        if self.spec_len > 0:
            t = self.spec_len + 1
            out += [("verify", bb, t, kb) for bb in self.verify_buckets for kb in self.kv_buckets if kb >= t]
        out += [("prefill", 1, t, kb) for t in self.prefill_buckets for kb in self.kv_buckets if kb >= t]
        return out

    def num_graphs(self) -> int:
        return len(self._graphs)

    def warmup(self, progress: bool = False) -> int:
        """Capture (and compile) every shape now; returns the number of graphs."""
        todo = [s for s in self.shapes() if s not in self._graphs]
        if not todo:
            return self.num_graphs()
        from tqdm import tqdm

        with torch.inference_mode():
            for shape in tqdm(todo, desc=f"capturing CUDA graphs ({self.mode})", unit="graph",
                              disable=not progress, dynamic_ncols=True):
                self._capture(shape)
        torch.cuda.synchronize(self.device)
        return self.num_graphs()

    # ---- the decode step --------------------------------------------------------------------------
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
        bb = _bucket(self.batch_buckets, b)
        graph, out = self._graph(("decode", bb, 1, _bucket(self.kv_buckets, kv_need)))
        host = self._host_np  # numpy view of pinned memory: cheap element writes
        host[0, :b], host[1, :b], host[2, :b] = tokens, positions, slots
        host[0, b:bb], host[1, b:bb], host[2, b:bb] = 0, 0, self.scratch_slot  # padding rows
        self._block[:, :bb].copy_(self._host[:, :bb], non_blocking=True)
        graph.replay()
        return out[:b, 0]

    # ---- multi-token passes -------------------------------------------------------------------------
    @torch.inference_mode()
    def verify(self, rows: list[list[int]], positions: list[int], slots: list[int]) -> torch.Tensor:
        """rows[i] = [next token, draft...] (1 + at most spec_len ids) fed at positions[i], ... of
        cache row slots[i] -> logits [B, T, V], T >= every row's length (row i's first len(rows[i])
        are its own). The caller guarantees positions[i] + spec_len < cache length and
        len(rows) <= max_verify_batch."""
        b = len(rows)
        t = self.spec_len + 1 if self.mode != "eager" else max(len(r) for r in rows)
        toks = [r + [r[-1]] * (t - len(r)) for r in rows]
        kv_need = max(positions) + t
        if self.mode == "eager":
            tt = torch.tensor(toks, device=self.device)
            pp = torch.tensor([[p + j for j in range(t)] for p in positions], device=self.device)
            ss = torch.tensor(slots, device=self.device)
            with sdpa_kernel(MASKED_SDPA_BACKENDS):
                return self.model(tt, pp, cache=SlotView(self.cache, ss, kv_need))
        bb = _bucket(self.verify_buckets, b)
        graph, out = self._graph(("verify", bb, t, _bucket(self.kv_buckets, kv_need)))
        self._fill(toks, positions, slots, bb, t)
        graph.replay()
        return out[:b]

    def prefill_fits(self, n: int, start: int) -> bool:
        """Whether a prefill chunk of n tokens at `start` can replay a graph."""
        t = _bucket(self.prefill_buckets, n)
        return t is not None and start + t <= self.cache.max_len

    @torch.inference_mode()
    def prefill(self, tokens: list[int], start: int, slot: int) -> torch.Tensor:
        """A short prefill chunk (prefill_fits) at positions start.. of cache row `slot` ->
        hidden states [1, T, H], the first len(tokens) of them valid."""
        t = _bucket(self.prefill_buckets, len(tokens))
        graph, out = self._graph(("prefill", 1, t, _bucket(self.kv_buckets, start + t)))
        self._fill([tokens + [tokens[-1]] * (t - len(tokens))], [start], [slot], 1, t)
        graph.replay()
        return out

    def _fill(self, toks: list[list[int]], positions: list[int], slots: list[int], bb: int, t: int) -> None:
        b, rows, tm = len(toks), self._mrows, self._t_max
        host = self._mhost_np
        blk = host[:2 * rows * tm].reshape(2, rows, tm)
        blk[0, :b, :t] = toks
        blk[1, :b, :t] = [[p + j for j in range(t)] for p in positions]
        blk[0, b:bb, :t] = 0
        blk[1, b:bb, :t] = range(t)  # padding rows: positions 0.. of the scratch slot
        host[2 * rows * tm:2 * rows * tm + b] = slots
        host[2 * rows * tm + b:2 * rows * tm + bb] = self.scratch_slot
        self._mblock.copy_(self._mhost, non_blocking=True)

    # ---- capture ------------------------------------------------------------------------------------
    def _graph(self, shape):
        graph = self._graphs.get(shape)
        if graph is None:
            log.warning("capturing a CUDA graph during traffic: %s (Engine(warmup=True) captures them at start)", shape)
            graph = self._capture(shape)
        return graph

    def _inputs(self, kind: str, bb: int, t: int):
        if kind == "decode":
            return self._block[0, :bb].unsqueeze(1), self._block[1, :bb].unsqueeze(1), self._block[2, :bb]
        rows, tm = self._mrows, self._t_max
        blk = self._mblock[:2 * rows * tm].view(2, rows, tm)
        return blk[0, :bb, :t], blk[1, :bb, :t], self._mblock[2 * rows * tm:2 * rows * tm + bb]

    def _run(self, shape):
        kind, bb, t, kb = shape
        tokens, positions, slots = self._inputs(kind, bb, t)
        view = SlotView(self.cache, slots, kb)
        if kind == "decode":
            return self._fn(tokens, positions, cache=view)
        with sdpa_kernel(MASKED_SDPA_BACKENDS):
            if kind == "verify":
                return self.model(tokens, positions, cache=view)
            return self.model.hidden_states(tokens, positions, cache=view)

    def _capture(self, shape):
        # Warm up (and compile) on a side stream with every row pointed at the scratch slot, so
        # these untracked runs write nowhere that matters; then capture with the same shapes. The
        # caller fills the real inputs afterwards.
        kind, bb, t, _ = shape
        tokens, positions, slots = self._inputs(kind, bb, t)
        tokens.zero_()
        positions.copy_(torch.arange(t, device=self.device).expand(bb, t))
        slots.fill_(self.scratch_slot)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3 if self.mode == "compile" and kind == "decode" else 1):
                self._run(shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._run(shape)
        self._graphs[shape] = (graph, out)
        log.debug("captured %s graph batch=%d len=%d kv_len=%d (%s)", kind, bb, t, shape[3], self.mode)
        return graph, out
