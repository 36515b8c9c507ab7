"""The one decoding loop of codegemma: slots, continuous batching, prefix reuse, streaming, stops.

A background thread owns the model and the KV cache. Between decode steps it frees the slots of
finished or cancelled requests and admits waiting ones (prefilling only the part of each prompt
that the prefix cache does not already hold), then runs one decode step for every active slot at
once. Callers talk to it only through `submit` (thread-safe, non-blocking) and the handle it
returns; the HTTP server, the Python API and the CLI all go through here.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import asdict

import torch
from torch.nn.attention import sdpa_kernel

from codegemma.fim.format import stop_token_ids
from codegemma.infer.detok import IncrementalDetokenizer, StopStrings
from codegemma.infer.fuse import fuse_projections, use_decode_attention
from codegemma.infer.graphs import MASKED_SDPA_BACKENDS, DecodeRunner
from codegemma.infer.modes import resolve_decode
from codegemma.infer.kv import SlotView
from codegemma.infer.prefix import SlotTable
from codegemma.infer.requests import (Completion, EngineError, EngineStats, QueueFullError, RequestHandle,
                                      StreamEvent)
from codegemma.infer.sampling import SamplingParams, make_generator, sample
from codegemma.infer.speculate import Drafter
from codegemma.model.cache import KVCache

__all__ = ["Engine", "SamplingParams", "Completion", "StreamEvent", "RequestHandle", "QueueFullError",
           "EngineError"]

log = logging.getLogger(__name__)

# Prefill attention uses a mask (a prompt continues a cached prefix); on Hopper PyTorch would pick
# cuDNN's kernel, which builds a new plan for every new (prompt, context) length: tens of ms per
# request. The memory-efficient kernel takes any mask with no per-shape setup.
_PREFILL_BACKENDS = MASKED_SDPA_BACKENDS


class _Request:
    """Engine-side state of one request (touched only by the engine thread once admitted)."""

    def __init__(self, rid: int, prompt: list[int], params: SamplingParams, handle: RequestHandle,
                 tokenizer, stop_ids: set[int]):
        self.id, self.prompt, self.params, self.handle = rid, prompt, params, handle
        self.generator = make_generator(params.seed) if not params.greedy else None
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopStrings(params.stop)
        self.stop_ids = stop_ids
        self.tokenizer = tokenizer
        self.generated: list[int] = []
        self.text = ""  # decoded text so far (never contains a complete stop string)
        self.emitted = 0  # characters of `text` already streamed
        self.pending_ids: list[int] = []  # ids not yet attached to a streamed event
        self.next_token: int | None = None  # sampled but not yet fed to the model
        self.history: torch.Tensor | None = None  # prompt + generated ids, for repetition penalty
        self.slot = None
        self.drafter: Drafter | None = None  # speculative decoding state (greedy requests only)
        self.cached_tokens = 0
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_admit = self.t_first = self.t_prefilled = 0.0

    # ---- text handling ----------------------------------------------------------------------
    def _emit(self, upto: int) -> None:
        if upto > self.emitted or self.pending_ids:
            self.handle._push(self.text[self.emitted:upto], self.pending_ids)
            self.emitted = max(self.emitted, upto)
            self.pending_ids = []

    def add_token(self, tid: int) -> tuple[str, str | None, int | None] | None:
        """Account for one generated id; returns (finish_reason, stop_text, stop_id) when done."""
        self.generated.append(tid)
        self.pending_ids.append(tid)
        if self.history is not None:
            self.history = torch.cat([self.history, self.history.new_tensor([tid])])
        if tid in self.stop_ids:
            return self._finish_text("stop", self.tokenizer.decode([tid]), tid)
        old = len(self.text)
        self.text += self.detok.add(tid)
        if self.stops and len(self.text) > old:
            hit = self.stops.find(self.text, old)
            if hit is not None:
                return self._cut(hit)
        if len(self.generated) >= self.params.max_new_tokens:
            return self._finish_text("length", None, None)
        if self.params.max_time_ms is not None and self.t_first and \
                (time.perf_counter() - self.t_first) * 1000 >= self.params.max_time_ms:
            return self._finish_text("time", None, None)
        hold = self.stops.holdback(self.text) if self.stops else 0
        self._emit(len(self.text) - hold)
        return None

    def _cut(self, hit: tuple[int, str]) -> tuple[str, str, None]:
        i, s = hit
        self.text = self.text[:i]
        self._emit(i)
        return "stop", s, None

    def _finish_text(self, reason: str, stop_text: str | None, stop_id: int | None):
        old = len(self.text)
        self.text += self.detok.flush()
        if self.stops and len(self.text) > old:
            hit = self.stops.find(self.text, old)
            if hit is not None:
                return self._cut(hit)
        self._emit(len(self.text))
        return reason, stop_text, stop_id

    def completion(self, reason: str, stop_text: str | None = None, stop_id: int | None = None) -> Completion:
        now = time.perf_counter()
        return Completion(
            text=self.text, token_ids=list(self.generated), finish_reason=reason,
            prompt_tokens=len(self.prompt), completion_tokens=len(self.generated),
            cached_tokens=self.cached_tokens, stop_text=stop_text, stop_token_id=stop_id,
            prompt_ms=(self.t_prefilled - self.t_admit) * 1000 if self.t_prefilled else 0.0,
            decode_ms=(now - self.t_first) * 1000 if self.t_first else 0.0,
            queue_ms=((self.t_admit or now) - self.t_submit) * 1000)


DEFAULT_MAX_SEQ_LEN = 8192  # CodeGemma's training length


def context_length(config, max_seq_len: int | None = None) -> int:
    """The context (KV-cache length) an engine serves: `max_seq_len`, else the model's own,
    at most DEFAULT_MAX_SEQ_LEN."""
    return int(max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN))


class Engine:
    def __init__(self, model, tokenizer, *, max_slots: int = 8, max_seq_len: int | None = None,
                 device=None, decode: str = "auto", max_queue: int = 256,
                 prefill_chunk: int = 2048, warmup: bool = False, compile_prefill: bool = False,
                 speculate: int = 15, fuse: bool | None = None):
        """`decode`: one of graphs.DECODE_MODES: "auto" (CUDA graphs on GPU, eager on CPU), "eager",
        "graphs" (CUDA graphs of the eager kernels), "compile" (torch.compile, then graphs).
        `warmup`: compile and capture the decode step for every batch bucket now (a server does
        this at start-up) instead of when a batch size first occurs. `compile_prefill` (compile
        mode only): run prefill through the compiled model too (fewer kernel launches: short
        prefills, such as a keystroke after a prefix-cache hit, are launch-bound when eager).
        `speculate`: most draft tokens verified per pass for greedy requests (drafts come from the
        slot's previous prompt and completion and from the request's own text, see
        infer/speculate.py; output is unchanged); 0 = off. `fuse`: q/k/v and gate/up weights as
        single matmuls (infer/fuse.py, in place, no extra weight memory); None = on GPU only."""
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        param = next(model.parameters())
        self.device = torch.device(device) if device is not None else param.device
        if param.device != self.device:
            model = model.to(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_seq_len = context_length(self.config, max_seq_len)
        self.max_slots = max_slots
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        if speculate < 0:
            raise ValueError(f"speculate must be >= 0 (0 = off), got {speculate}")
        use_decode_attention(self.model)  # the serving paths, swapped in from outside (infer/fuse.py)
        if fuse or (fuse is None and self.device.type == "cuda"):
            fuse_projections(self.model)  # idempotent: engines may share a model
        self.speculate = speculate
        if tokenizer.vocab_size > self.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                             f"{self.config.vocab_size}: they do not belong together")
        # One extra cache row: the scratch slot that padded CUDA-graph rows write into.
        self.cache = KVCache(self.config, max_slots + 1, self.max_seq_len, device=self.device, dtype=param.dtype)
        self.slots = SlotTable(max_slots)
        mode = resolve_decode(decode, self.device)
        self.decode_mode = mode
        self.runner = DecodeRunner(self.model, self.cache, scratch_slot=max_slots, max_batch=max_slots, mode=mode,
                                   spec_len=speculate)
        self._prefill_fn = self.model.hidden_states
        if compile_prefill and mode == "compile":
            self._prefill_fn = torch.compile(self.model.hidden_states)
        self.stop_ids = set(stop_token_ids(tokenizer))

        self._lock = threading.Condition()
        self._pending: collections.deque[_Request] = collections.deque()
        self._next_id = 0
        self._closed = False
        self._stats = EngineStats()
        if warmup:
            self.warmup()
        self._thread = threading.Thread(target=self._loop, name="codegemma-engine", daemon=True)
        self._thread.start()

    def warmup(self) -> int:
        """Capture (and compile) the decode step for each batch bucket at the shortest kv bucket;
        rows point at the scratch slot, so no request's cache is touched. Returns graphs captured.
        Called from __init__ (before the loop thread starts) when warmup=True."""
        if self.decode_mode == "eager":
            return 0
        scratch = self.max_slots
        with torch.inference_mode():
            for bb in self.runner.batch_buckets:
                self.runner([0] * bb, [0] * bb, [scratch] * bb)
        torch.cuda.synchronize(self.device)
        return self.runner.num_graphs()

    # ---- public API ----------------------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams | None = None, *,
               block: bool = False) -> RequestHandle:
        """Queue a request (token ids, <bos> included: codegemma.fim.prompt builds them) and return
        its handle at once. Raises QueueFullError when `max_queue` requests already wait (unless
        block=True), and ValueError for ids that break the contract: the prompt builder fits every
        prompt, so that is a caller's bug, not a user's mistake."""
        params = params or SamplingParams()
        ids = list(ids)
        vocab = self.config.vocab_size
        if not ids or any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise ValueError(f"the engine takes a non-empty list of token ids in [0, {vocab})")
        if len(ids) + params.max_new_tokens > self.max_seq_len:
            raise ValueError(f"{len(ids)} prompt tokens + max_new_tokens={params.max_new_tokens} exceed "
                             f"max_seq_len={self.max_seq_len}; build prompts with codegemma.fim.prompt")
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            while len(self._pending) >= self.max_queue:
                if not block:
                    raise QueueFullError(f"{len(self._pending)} requests are already waiting "
                                         f"(max_queue={self.max_queue}); retry later")
                self._lock.wait()
            handle = RequestHandle(self._next_id, self._cancel)
            req = _Request(self._next_id, ids, params, handle, self.tokenizer, self.stop_ids)
            handle._request = req
            self._next_id += 1
            self._pending.append(req)
            self._stats.requests_submitted += 1
            self._lock.notify_all()
        return handle

    def generate(self, prompts: list[list[int]], params: SamplingParams | None = None) -> list[Completion]:
        handles = [self.submit(p, params, block=True) for p in prompts]
        return [h.result() for h in handles]

    def warm(self, ids: list[int]) -> int:
        """Evaluate `ids` into the prefix cache without generating (llama.cpp n_predict=0).
        Returns the number of prompt tokens now cached."""
        c = self.submit(ids, SamplingParams(max_new_tokens=0), block=True).result()
        return c.prompt_tokens

    def stats(self) -> dict:
        with self._lock:
            d = asdict(self._stats)
            d.update(queue_length=len(self._pending), active_slots=len(self.slots.active()),
                     max_slots=self.max_slots, max_seq_len=self.max_seq_len, decode_mode=self.decode_mode,
                     cuda_graphs=getattr(self.runner, "num_graphs", lambda: 0)())
        return d

    def close(self) -> None:
        """Cancel every waiting and running request and stop the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._lock.notify_all()
        for req in waiting:
            req.handle._finish(req.completion("cancelled"))
        self._thread.join(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- cancellation ----------------------------------------------------------------------------
    def _cancel(self, handle: RequestHandle) -> None:
        req: _Request = handle._request
        with self._lock:
            req.cancelled = True
            if req in self._pending:
                self._pending.remove(req)
            self._lock.notify_all()
        if req.handle._finish(req.completion("cancelled")):
            with self._lock:
                self._stats.requests_cancelled += 1
                self._stats.requests_finished += 1

    # ---- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._pending and not self.slots.active():
                    self._lock.wait()
                if self._closed:
                    break
                self._reap()
                admitted = []
                while self._pending and self.slots.idle():
                    req = self._pending.popleft()
                    req.slot, req.cached_tokens = self.slots.acquire(req.prompt, req)
                    admitted.append(req)
                if admitted:
                    self._lock.notify_all()  # blocked submitters may proceed
            for req in admitted:
                self._guarded([req], self._prefill, req)
            active = [s.request for s in self.slots.active() if not s.request.cancelled]
            if active:
                self._guarded(active, self._decode, active)
        with self._lock:
            for slot in self.slots.active():
                slot.request.handle._finish(slot.request.completion("cancelled"))
                self.slots.release(slot)

    def _reap(self) -> None:
        """Free the slots of cancelled or finished requests (under the lock)."""
        for slot in self.slots.active():
            if slot.request.cancelled or slot.request.handle.done:
                self.slots.release(slot)

    def _guarded(self, reqs: list[_Request], fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a failed forward (e.g. OOM) fails these requests, not the engine
            log.exception("generation failed")
            with self._lock:
                for req in reqs:
                    self.slots.forget(req.slot)
                    req.handle._finish(None, exc)
                    self.slots.release(req.slot)

    def _finish(self, req: _Request, outcome) -> None:
        reason, stop_text, stop_id = outcome
        if req.generated:  # the next request in this slot may draft from this one
            req.slot.prev_prompt, req.slot.prev_output = req.prompt, list(req.generated)
        if req.handle._finish(req.completion(reason, stop_text, stop_id)):
            with self._lock:
                self._stats.requests_finished += 1
        with self._lock:
            self.slots.release(req.slot)

    @torch.inference_mode()
    def _prefill(self, req: _Request) -> None:
        req.t_admit = time.perf_counter()
        slot, start = req.slot, req.cached_tokens
        gen_tokens = req.params.max_new_tokens > 0
        if gen_tokens and start == len(req.prompt):
            start -= 1  # the last prompt token must be run again to get the next-token logits
        req.cached_tokens = start
        if self.speculate and gen_tokens and req.params.greedy and req.params.repetition_penalty == 1.0:
            req.drafter = Drafter(req.prompt, slot.prev_prompt, slot.prev_output)
        with self._lock:
            self._stats.prompt_tokens += len(req.prompt)
            self._stats.prefill_tokens += len(req.prompt) - start
            if start > 0:
                self._stats.prefix_cache_hits += 1
                self._stats.prefix_cache_tokens += start
        del slot.tokens[start:]
        hidden = None
        slot_t = torch.tensor([slot.index], device=self.device)
        for lo in range(start, len(req.prompt), self.prefill_chunk):
            if req.cancelled:
                return
            hi = min(lo + self.prefill_chunk, len(req.prompt))
            toks = torch.tensor([req.prompt[lo:hi]], device=self.device)
            pos = torch.arange(lo, hi, device=self.device)[None]
            # Hidden states only: the output head runs for the last position alone, not for every
            # prompt token ([T, 256000] logits would be most of a long prefill's memory traffic).
            with sdpa_kernel(_PREFILL_BACKENDS):
                hidden = self._prefill_fn(toks, pos, cache=SlotView(self.cache, slot_t, hi))
            slot.tokens.extend(req.prompt[lo:hi])
        req.t_prefilled = time.perf_counter()
        if not gen_tokens:
            self._finish(req, ("length", None, None))
            return
        if req.params.repetition_penalty != 1.0:
            req.history = torch.tensor(req.prompt, device=self.device)
        logits = self.model.logits(hidden[:, -1])  # [1, V]
        tok = sample(logits, [req.params], [req.generator],
                     [req.history] if req.history is not None else None)
        req.t_first = time.perf_counter()
        self._accept(req, int(tok.item()))

    def _accept(self, req: _Request, tid: int) -> None:
        with self._lock:
            self._stats.tokens_generated += 1
        if req.cancelled:
            return
        if req.drafter is not None:
            req.drafter.add(tid)
        outcome = req.add_token(tid)
        if outcome is not None:
            self._finish(req, outcome)
        else:
            req.next_token = tid

    @torch.inference_mode()
    def _decode(self, reqs: list[_Request]) -> None:
        """One step for every active request: rows with a draft are verified together in one
        multi-token pass, the others take a plain one-token step."""
        plain, spec = reqs, []
        if self.speculate:
            plain = []
            for r in reqs:
                d = self._draft(r) if len(spec) < self.runner.max_verify_batch else []
                (spec.append((r, d)) if d else plain.append(r))
        if plain:
            self._decode_plain(plain)
        if spec:
            self._verify(spec)

    def _draft(self, r: _Request) -> list[int]:
        if r.drafter is None:
            return []
        pos = len(r.slot.tokens)
        if pos + self.speculate >= self.max_seq_len:  # verify pads rows to speculate + 1 positions
            return []
        room = r.params.max_new_tokens - len(r.generated) - 1  # the pass also yields one token more
        return r.drafter.draft(min(self.speculate, room))

    def _verify(self, spec: list[tuple[_Request, list[int]]]) -> None:
        rows = [[r.next_token] + d for r, d in spec]
        ids = self.runner.verify(rows, [len(r.slot.tokens) for r, _ in spec], [r.slot.index for r, _ in spec])
        accepted_total = 0
        for (r, d), row, greedy in zip(spec, rows, ids):
            m = 0  # drafts confirmed: greedy[i] is the token after row[i], so d[i] == greedy[i]
            while m < len(d) and d[m] == greedy[m]:
                m += 1
            r.slot.tokens.extend(row[:m + 1])  # their keys/values are now valid in the cache
            r.drafter.verified(m)
            accepted_total += m
            for t in greedy[:m + 1]:
                self._accept(r, t)
                if r.handle.done or r.cancelled:
                    break
        with self._lock:
            self._stats.decode_steps += 1
            self._stats.spec_steps += 1
            self._stats.spec_draft_tokens += sum(len(d) for _, d in spec)
            self._stats.spec_accepted_tokens += accepted_total

    def _decode_plain(self, reqs: list[_Request]) -> None:
        tokens = [r.next_token for r in reqs]
        positions = [len(r.slot.tokens) for r in reqs]
        slots = [r.slot.index for r in reqs]
        logits = self.runner(tokens, positions, slots)  # [B, V]
        for r, t in zip(reqs, tokens):
            r.slot.tokens.append(t)
        history = [r.history for r in reqs] if any(r.history is not None for r in reqs) else None
        new = sample(logits, [r.params for r in reqs], [r.generator for r in reqs], history).tolist()
        with self._lock:
            self._stats.decode_steps += 1
        for r, t in zip(reqs, new):
            self._accept(r, t)
