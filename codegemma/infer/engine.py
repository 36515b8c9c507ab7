"""The one decoding loop of codegemma: slots, continuous batching, prefix and chunk reuse,
speculative decoding, streaming, stops.

A background thread owns the model and the KV cache. Between decode steps it frees the slots of
finished or cancelled requests and admits waiting ones (prefilling only the part of each prompt
that the slot's cache does not already hold), then runs one decode step for every active slot at
once: rows with draft tokens are verified in one multi-token pass, the others take a one-token
step. Callers talk to it only through `submit` (thread-safe, non-blocking) and the handle it
returns; the HTTP server, the Python API and the CLI all go through here.

Isolation: a request whose logits go non-finite fails alone (EngineError naming the cause); a
step that raises is rerun request by request, so only the request that fails alone fails; every
other request in the batch finishes as if it were alone.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import asdict

import torch

from codegemma.device import resolve_device
from codegemma.fim.format import stop_token_ids
from codegemma.infer.active import ActiveRequest
from codegemma.infer.fuse import fuse_projections, use_decode_attention
from codegemma.infer.graphs import DecodeRunner
from codegemma.infer.kv import SlotView, move_positions
from codegemma.infer.modes import resolve_decode
from codegemma.infer.prefix import SlotTable
from codegemma.infer.requests import (Completion, EngineError, EngineStats, QueueFullError, RequestHandle,
                                      PromptProgress, StreamEvent, TokenLogprob)
from codegemma.infer.samplers import Run, TokenChooser, upload
from codegemma.infer.sampling import SamplingParams
from codegemma.infer.speculate import Drafter
from codegemma.model.cache import KVCache

__all__ = ["Engine", "SamplingParams", "Completion", "StreamEvent", "RequestHandle", "QueueFullError",
           "EngineError", "TokenLogprob"]

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQ_LEN = 8192  # CodeGemma's training length


def context_length(config, max_seq_len: int | None = None) -> int:
    """The context (KV-cache length) an engine serves: `max_seq_len`, else the model's own,
    at most DEFAULT_MAX_SEQ_LEN."""
    return int(max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN))


class Engine:
    def __init__(self, model, tokenizer, *, max_slots: int = 8, max_seq_len: int | None = None,
                 device=None, decode: str = "auto", max_queue: int = 256, prefill_chunk: int = 4096,
                 warmup: bool = False, speculate: int = 15, cache_reuse: int = 0, fuse: bool | None = None,
                 progress: bool = False):
        """`decode`: one of modes.DECODE_MODES: "auto" (CUDA graphs on GPU, eager on CPU), "eager",
        "graphs" (CUDA graphs of the eager kernels), "compile" (torch.compile, then graphs).
        `warmup`: compile and capture every shape the engine can meet now (decode and verification
        per batch and kv bucket, short prefill chunks per length and kv bucket), with a progress bar
        if `progress`; a server does this at start-up so that nothing compiles during traffic.
        `prefill_chunk`: longest prefill pass (longer prompts are prefilled in chunks).
        `speculate`: most draft tokens verified per pass (drafts come from the slot's previous
        prompt and completion and from the request's own text, see infer/speculate.py); greedy and
        sampled requests alike, output distribution unchanged (infer/samplers.py); 0 = off.
        `cache_reuse`: reuse cached runs of at least this many tokens that moved to new positions
        (llama.cpp's --cache-reuse; see infer/prefix.py for what it approximates); 0 = off.
        `fuse`: q/k/v and gate/up weights as single matmuls (infer/fuse.py); None = on GPU only."""
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        if speculate < 0:
            raise ValueError(f"speculate must be >= 0 (0 = off), got {speculate}")
        if cache_reuse < 0:
            raise ValueError(f"cache_reuse must be >= 0 (0 = off), got {cache_reuse}")
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        param = next(model.parameters())
        self.device = resolve_device(device) if device is not None else param.device
        if param.device != self.device:
            model = model.to(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_seq_len = context_length(self.config, max_seq_len)
        self.max_slots, self.max_queue, self.prefill_chunk = max_slots, max_queue, prefill_chunk
        self.speculate, self.cache_reuse = speculate, cache_reuse
        use_decode_attention(self.model)  # the serving paths, swapped in from outside (infer/fuse.py)
        if fuse or (fuse is None and self.device.type == "cuda"):
            fuse_projections(self.model)  # idempotent: engines may share a model
        if tokenizer.vocab_size > self.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                             f"{self.config.vocab_size}: they do not belong together")
        # One extra cache row: the scratch slot that padded CUDA-graph rows write into.
        self.cache = KVCache(self.config, max_slots + 1, self.max_seq_len, device=self.device, dtype=param.dtype)
        # Ids seen per slot, for the repetition penalty (allocated once: no allocation in traffic).
        self.seen = torch.zeros(max_slots + 1, self.config.vocab_size, dtype=torch.bool, device=self.device)
        self.slots = SlotTable(max_slots)
        self.decode_mode = resolve_decode(decode, self.device)
        self.runner = DecodeRunner(self.model, self.cache, scratch_slot=max_slots, max_batch=max_slots,
                                   mode=self.decode_mode, spec_len=speculate)
        self.stop_ids = set(stop_token_ids(tokenizer))
        self.chooser = TokenChooser(tokenizer, self.stop_ids)

        # torch's intra-op thread count is per thread under OpenMP: the loop thread takes the
        # count of the thread that built the engine (torch.set_num_threads before Engine(...) works).
        self._threads = torch.get_num_threads()
        self._lock = threading.Condition()
        self._pending: collections.deque[ActiveRequest] = collections.deque()
        self._next_id = 0
        self._closed = False
        self._stats = EngineStats()
        if warmup:
            self.warmup(progress)
        self._thread = threading.Thread(target=self._loop, name="codegemma-engine", daemon=True)
        self._thread.start()

    def warmup(self, progress: bool = False) -> int:
        """Capture (and compile) every graph shape; rows point at the scratch slot, so no request's
        cache is touched. Returns the graphs captured. Called from __init__ when warmup=True."""
        return self.runner.warmup(progress) if self.decode_mode != "eager" else 0

    # ---- public API ----------------------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams | None = None, *,
               block: bool = False, progress: bool = False) -> RequestHandle:
        """Queue a request (token ids, <bos> included: codegemma.fim.prompt builds them) and return
        its handle at once. Raises QueueFullError when `max_queue` requests already wait (unless
        block=True), and ValueError for ids that break the contract: the prompt builder fits every
        prompt, so that is a caller's bug, not a user's mistake. progress=True: the stream also
        carries PromptProgress events, at the start of prefill and after each prefill chunk."""
        params = params or SamplingParams()
        ids = list(ids)
        vocab = self.config.vocab_size
        if not ids or any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise ValueError(f"the engine takes a non-empty list of token ids in [0, {vocab})")
        if len(ids) + params.max_new_tokens > self.max_seq_len:
            raise ValueError(f"{len(ids)} prompt tokens + max_new_tokens={params.max_new_tokens} exceed "
                             f"max_seq_len={self.max_seq_len}; build prompts with codegemma.fim.prompt")
        bad = [t for t, _ in params.logit_bias if t >= vocab]
        if bad:
            raise ValueError(f"logit_bias: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            while len(self._pending) >= self.max_queue:
                if not block:
                    raise QueueFullError(f"{len(self._pending)} requests are already waiting "
                                         f"(max_queue={self.max_queue}); retry later")
                self._lock.wait()
            handle = RequestHandle(self._next_id, self._cancel)
            req = ActiveRequest(self._next_id, ids, params, handle, self.tokenizer, self.stop_ids)
            req.progress = progress
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
                     cuda_graphs=self.runner.num_graphs(), speculate=self.speculate, cache_reuse=self.cache_reuse)
        return d

    def slot_info(self) -> list[dict]:
        """Read-only view of each slot for a server's /slots: id, is_processing, n_ctx, the ids
        cached there, and the running request's id and tokens generated so far."""
        with self._lock:
            out = []
            for s in self.slots.slots:
                req = s.request
                out.append({"id": s.index, "is_processing": req is not None, "n_ctx": self.max_seq_len,
                            "cached_tokens": len(s.tokens), "id_task": req.id if req is not None else -1,
                            "n_decoded": len(req.generated) if req is not None else 0,
                            "n_remain": req.params.max_new_tokens - len(req.generated) if req is not None else -1,
                            "has_new_line": req is not None and "\n" in req.text})
            return out

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
        req: ActiveRequest = handle._request
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
        torch.set_num_threads(self._threads)
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
                    req.slot, req.cached_tokens, req.moves = self.slots.acquire(req.prompt, req, self.cache_reuse)
                    admitted.append(req)
                if admitted:
                    self._lock.notify_all()  # blocked submitters may proceed
            for req in admitted:
                self._isolated([req], lambda reqs: self._prefill(reqs[0]))
            active = [s.request for s in self.slots.active() if not s.request.cancelled]
            if active:
                self._decode(active)
        with self._lock:
            for slot in self.slots.active():
                slot.request.handle._finish(slot.request.completion("cancelled"))
                self.slots.release(slot)

    def _reap(self) -> None:
        """Free the slots of cancelled or finished requests (under the lock)."""
        for slot in self.slots.active():
            if slot.request.cancelled or slot.request.handle.done:
                self.slots.release(slot)

    def _isolated(self, reqs: list[ActiveRequest], fn) -> None:
        """fn(reqs); if it raises, rerun it for each request alone and fail only those that fail
        alone. Safe because a step changes no request's state until its forward pass and token
        choice succeeded (rerunning a forward rewrites the same cache positions)."""
        try:
            fn(reqs)
            return
        except Exception as exc:  # a failed forward (e.g. OOM) must not take the engine down
            if len(reqs) == 1:
                log.exception("generation failed")
                self._fail(reqs[0], exc)
                return
            log.exception("a batched step failed; running its %d requests one by one", len(reqs))
        for req in reqs:
            if req.handle.done or req.cancelled:
                continue
            try:
                fn([req])
            except Exception as exc:
                log.exception("generation failed")
                self._fail(req, exc)

    def _fail(self, req: ActiveRequest, error) -> None:
        err = error if isinstance(error, BaseException) else EngineError(str(error))
        with self._lock:
            self.slots.forget(req.slot)  # its cache contents are unknown
            if req.handle._finish(None, err):
                self._stats.requests_failed += 1
                self._stats.requests_finished += 1
            self.slots.release(req.slot)

    def _finish(self, req: ActiveRequest, outcome) -> None:
        reason, stop_text, stop_id = outcome
        if req.generated:  # the next request in this slot may draft from this one
            req.slot.prev_prompt, req.slot.prev_output = req.prompt, list(req.generated)
        if req.handle._finish(req.completion(reason, stop_text, stop_id)):
            with self._lock:
                self._stats.requests_finished += 1
        with self._lock:
            self.slots.release(req.slot)

    # ---- prefill ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prefill(self, req: ActiveRequest) -> None:
        req.t_admit = time.perf_counter()
        slot, start = req.slot, req.cached_tokens
        gen_tokens = req.params.max_new_tokens > 0
        if req.moves:
            move_positions(self.cache, slot.index, req.moves, self.config.head_dim, self.config.rope_theta)
        if gen_tokens and start == len(req.prompt):
            start -= 1  # the last prompt token must be run again to get the next-token logits
        req.cached_tokens = start
        if self.speculate and gen_tokens:
            req.drafter = Drafter(req.prompt, slot.prev_prompt, slot.prev_output)
        with self._lock:
            self._stats.prompt_tokens += len(req.prompt)
            self._stats.prefill_tokens += len(req.prompt) - start
            if start > 0:
                self._stats.prefix_cache_hits += 1
                self._stats.prefix_cache_tokens += start
            if req.moves:
                self._stats.reuse_chunks += len(req.moves)
                self._stats.reuse_tokens += sum(n for _, _, n in req.moves)
        del slot.tokens[start:]
        if req.progress:
            req.handle._progress(PromptProgress(len(req.prompt), start, start, 0.0))
        last = None  # hidden state of the last prompt token [1, H]
        # One upload, no synchronisation: the host launches chunk after chunk while the GPU computes.
        slot_t = upload([slot.index], torch.int64, self.device)
        ids = upload(req.prompt[start:], torch.int64, self.device)[None] if start < len(req.prompt) else None
        for lo in range(start, len(req.prompt), self.prefill_chunk):
            if req.cancelled:
                return
            hi = min(lo + self.prefill_chunk, len(req.prompt))
            chunk = req.prompt[lo:hi]
            if self.runner.prefill_fits(len(chunk), lo):  # short: replay a captured graph
                last = self.runner.prefill(chunk, lo, slot.index)[:, len(chunk) - 1]
            else:
                # Hidden states only: the output head runs for the last position alone, not for every
                # prompt token ([T, 256000] logits would be most of a long prefill's memory traffic).
                toks = ids[:, lo - start:hi - start]
                pos = torch.arange(lo, hi, device=self.device)[None]
                last = self.model.hidden_states(toks, pos, cache=SlotView(self.cache, slot_t, hi, tail=True))[:, -1]
            slot.tokens.extend(chunk)
            if req.progress:  # what was computed, not what was queued: wait for this chunk
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                ms = (time.perf_counter() - req.t_admit) * 1000.0
                req.handle._progress(PromptProgress(len(req.prompt), start, hi, ms))
        req.t_prefilled = time.perf_counter()
        if not gen_tokens:
            self._finish(req, ("length", None, None))
            return
        if req.params.penalized:
            self.seen[slot.index].zero_()
            self.seen[slot.index, upload(req.prompt, torch.int64, self.device)] = True
        logits = self.model.logits(last)  # [1, V]
        choice = self.chooser.choose(logits, [Run(req.params, 0, [], req.generator, slot.index)], self.seen)[0]
        req.t_first = time.perf_counter()
        self._commit(req, choice)

    # ---- decode -------------------------------------------------------------------------------------
    def _decode(self, reqs: list[ActiveRequest]) -> None:
        """One step for every request in `reqs`: rows with a draft are verified together in one
        multi-token pass, the others take a plain one-token step (each part isolated on its own,
        so a retry never steps a request twice)."""
        plain, spec = [], []
        for r in reqs:
            r.draft = self._draft(r) if len(spec) < self.runner.max_verify_batch else []
            (spec if r.draft else plain).append(r)
        if plain:
            self._isolated(plain, self._step)
        if spec:
            self._isolated(spec, self._verify)

    @torch.inference_mode()
    def _step(self, reqs: list[ActiveRequest]) -> None:
        logits = self.runner([r.next_token for r in reqs], [len(r.slot.tokens) for r in reqs],
                             [r.slot.index for r in reqs])  # [B, V]
        runs = [Run(r.params, i, [], r.generator, r.slot.index) for i, r in enumerate(reqs)]
        choices = self.chooser.choose(logits, runs, self.seen)
        with self._lock:
            self._stats.decode_steps += 1
            self._stats.decode_rows += len(reqs)
        self._commit_all([(r, [], c) for r, c in zip(reqs, choices)])

    @torch.inference_mode()
    def _verify(self, reqs: list[ActiveRequest]) -> None:
        rows = [[r.next_token] + r.draft for r in reqs]
        logits = self.runner.verify(rows, [len(r.slot.tokens) for r in reqs], [r.slot.index for r in reqs])
        t = logits.shape[1]  # [B, T, V]
        runs = [Run(r.params, i * t, r.draft, r.generator, r.slot.index) for i, r in enumerate(reqs)]
        choices = self.chooser.choose(logits.reshape(-1, logits.shape[-1]), runs, self.seen)
        with self._lock:
            self._stats.decode_steps += 1
            self._stats.decode_rows += len(reqs)
            self._stats.spec_steps += 1
            self._stats.spec_draft_tokens += sum(len(r.draft) for r in reqs)
            self._stats.spec_accepted_tokens += sum(len(c.tokens) - 1 for c in choices if c.error is None)
        self._commit_all([(r, r.draft, c) for r, c in zip(reqs, choices)])

    def _draft(self, r: ActiveRequest) -> list[int]:
        if r.drafter is None:
            return []
        pos = len(r.slot.tokens)
        if pos + self.speculate >= self.max_seq_len:  # verify pads rows to speculate + 1 positions
            return []
        room = r.params.max_new_tokens - len(r.generated) - 1  # the pass also yields one token more
        return r.drafter.draft(min(self.speculate, room))

    def _commit_all(self, items) -> None:
        """Apply a step's choices: (request, drafts fed, Choice). The ids fed whose keys/values are
        now valid join the slot; emitted tokens are accounted; the penalty masks learn them."""
        slots, toks = [], []
        for r, drafts, c in items:
            if c.error is None:
                m = len(c.tokens) - 1  # drafts accepted
                r.slot.tokens.extend(([r.next_token] + drafts)[:m + 1])
                if drafts and r.drafter is not None:
                    r.drafter.verified(m)
                if r.params.penalized:
                    slots += [r.slot.index] * len(c.tokens)
                    toks += c.tokens
            self._commit(r, c)
        if toks:
            self.seen[upload(slots, torch.int64, self.device), upload(toks, torch.int64, self.device)] = True

    def _commit(self, req: ActiveRequest, choice) -> None:
        if choice.error is not None:
            log.warning("request %d failed: %s", req.id, choice.error)
            self._fail(req, EngineError(choice.error))
            return
        for i, tid in enumerate(choice.tokens):
            with self._lock:
                self._stats.tokens_generated += 1
            if req.cancelled or req.handle.done:
                return
            if req.drafter is not None:
                req.drafter.add(tid)
            lp = choice.logprobs[i] if choice.logprobs else None
            pp = choice.probs[i] if choice.probs else None
            outcome = req.add_token(tid, lp, pp)
            if outcome is not None:
                self._finish(req, outcome)
                return
            req.next_token = tid
