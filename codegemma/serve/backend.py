"""What the protocol modules share: prompts within the context, submission, streaming, cancellation.

The server has no generation logic: prompts are rendered by codegemma.fim (format, truncate) and
run by the engine. This module turns a protocol request into engine calls:

- `Backend.fim_prompt / text_prompt / token_prompt / chat_prompt` -> a `Prompt` from the one
  prompt builder (codegemma.fim.prompt: ids that fit the context together with the tokens to
  generate, and what was cut); its errors become 400s.
- `Backend.start(prepared, params)` -> `Generation` (a submitted request; 429 when the queue is full).
- `Generation.deltas()` streams text and cancels the engine request when the consumer stops early
  (client disconnect, n_indent cut, ...); `Generation.run(request)` waits for the whole text and
  cancels if the HTTP client goes away meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from codegemma.fim.prompt import Prompt, PromptBuilder, PromptError
from codegemma.serve.errors import APIError
from codegemma.serve.metrics import ServerMetrics

log = logging.getLogger("codegemma.serve")

DISCONNECT_POLL_S = 0.2  # how often a non-streaming request checks that its client is still there


class ClientGone(Exception):
    """The HTTP client disconnected; its generation was cancelled."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Backend:
    """One served model: engine + tokenizer + the name clients call it by."""

    def __init__(self, engine, tokenizer, model_name: str, config=None, model_dir: str | None = None,
                 fim_mode: str = "psm"):
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.model_dir = model_dir
        self.n_ctx = int(engine.max_seq_len)
        # fim_mode: the order every infill request is rendered in: the IDE APIs carry no mode, so it
        # is the server's (PSM for CodeGemma; codegemma-nano completes better from SPM prompts)
        self.prompts = PromptBuilder(tokenizer, self.n_ctx, fim_mode)
        self.fim_mode = self.prompts.fim_mode
        self.in_flight = 0  # Generations started and not yet closed (touched on the event loop only)
        # Threads that wait for whole completions (cheap: blocked on an Event); see Generation.run.
        # One per request the engine can hold (running + queued), plus a few for n > 1 fan-out.
        capacity = int(getattr(engine, "max_slots", 8)) + int(getattr(engine, "max_queue", 64)) + 16
        self.waiters = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="codegemma-wait")
        self.metrics = ServerMetrics(engine.stats, lambda: self.in_flight)
        self.created = int(time.time())

    # ---- prompts (built by codegemma.fim.prompt; its errors are the client's: 400) -------------
    def _build(self, method, *args, **kwargs) -> Prompt:
        try:
            prompt = method(*args, **kwargs)
        except PromptError as exc:
            raise APIError(400, str(exc)) from None
        if prompt.truncated:
            self.metrics.truncated.inc()
        return prompt

    def fim_prompt(self, prefix: str, suffix: str, *, max_new_tokens: int | None, path: str | None = None,
                   context: Sequence[tuple[str, str]] = (), middle: str = "", n_ctx: int | None = None) -> Prompt:
        if not self.tokenizer.has_fim:
            raise APIError(501, "infill is not supported by this model: its tokenizer has no "
                                "<|fim_prefix|>/<|fim_suffix|>/<|fim_middle|> tokens; serve a CodeGemma model")
        return self._build(self.prompts.fim, prefix, suffix, path=path, context=context, middle=middle,
                           max_new_tokens=max_new_tokens, n_ctx=n_ctx)

    def text_prompt(self, text: str, *, max_new_tokens: int | None, n_ctx: int | None = None) -> Prompt:
        """A prompt used verbatim (special-token texts in it become control tokens)."""
        return self._build(self.prompts.text, text, max_new_tokens=max_new_tokens, n_ctx=n_ctx)

    def token_prompt(self, ids: Sequence[int], *, max_new_tokens: int | None, n_ctx: int | None = None) -> Prompt:
        """Token ids sent by the client, run as given (the start is dropped if they do not fit)."""
        return self._build(self.prompts.tokens, ids, max_new_tokens=max_new_tokens, n_ctx=n_ctx)

    def chat_prompt(self, messages: list[dict[str, str]], *, max_new_tokens: int | None,
                    n_ctx: int | None = None) -> Prompt:
        return self._build(self.prompts.chat, messages, max_new_tokens=max_new_tokens, n_ctx=n_ctx)

    # ---- running --------------------------------------------------------------------------------
    def sampling(self, prepared: Prompt, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int | None = None, stop: Sequence[str] = (),
                 max_time_ms: float | None = None):
        """SamplingParams for `prepared`. The CodeGemma stop tokens (FIM sentinels, file separator,
        eos, end_of_turn) are always on: the engine stops on their ids, so clients need not send them."""
        from codegemma.infer.sampling import SamplingParams

        if top_p is not None and top_p <= 0:  # top_p 0 keeps only the best token: greedy
            temperature, top_p = 0.0, 1.0
        stops = tuple(dict.fromkeys(s for s in stop if s))
        try:
            return SamplingParams(max_new_tokens=prepared.max_new_tokens, temperature=float(temperature or 0.0),
                                  top_k=int(top_k or 0), top_p=float(top_p if top_p is not None else 1.0),
                                  repetition_penalty=float(repetition_penalty or 1.0), seed=seed, stop=stops,
                                  max_time_ms=max_time_ms or None)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None

    def start(self, prepared: Prompt, params) -> "Generation":
        from codegemma.infer.requests import QueueFullError

        try:
            handle = self.engine.submit(prepared.ids, params)
        except ValueError as exc:  # the engine refuses the prompt (e.g. empty): the client's mistake
            raise APIError(400, f"prompt refused: {exc}", "prompt") from None
        except QueueFullError:
            self.metrics.rejected.inc()
            raise APIError(429, "the server is busy: its request queue is full; retry in a moment",
                           headers={"Retry-After": "1"}) from None
        return Generation(self, handle, prepared)

    def start_all(self, jobs: Sequence[tuple[Prompt, Any]]) -> list["Generation"]:
        """Submit several requests; if one is refused, cancel those already submitted."""
        gens: list[Generation] = []
        try:
            for prepared, params in jobs:
                gens.append(self.start(prepared, params))
        except BaseException:
            for g in gens:
                g.cancel()
            raise
        return gens

    async def warm(self, prepared: Prompt, request=None):
        """Evaluate the prompt into the prefix cache only (llama.cpp n_predict=0). This is what
        engine.warm() does, submitted without blocking: a full queue answers 429 rather than
        holding a thread. Returns the Completion (prompt_tokens = tokens now cached)."""
        from codegemma.infer.sampling import SamplingParams

        return await self.start(prepared, SamplingParams(max_new_tokens=0)).run(request)

    def stats(self) -> dict[str, Any]:
        return dict(self.engine.stats())

    def close(self) -> None:
        """Cancel everything (waiting threads return as their handles finish) and stop the engine."""
        self.engine.close()
        self.waiters.shutdown(wait=False, cancel_futures=True)


class Generation:
    """One submitted engine request, seen from the server."""

    def __init__(self, backend: Backend, handle, prepared: Prompt):
        self.backend = backend
        self.handle = handle
        self.prepared = prepared
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.completion = None
        self._open = True
        backend.in_flight += 1

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.t_end = time.perf_counter()
            self.backend.in_flight -= 1

    def cancel(self) -> None:
        if self.completion is None:
            self.handle.cancel()
        self._close()

    async def deltas(self) -> AsyncIterator[str]:
        """Text as it is generated. Leaving the loop early (break, disconnect) cancels the request."""
        try:
            async for event in self.handle.aevents():
                if self.t_first is None:
                    self.t_first = time.perf_counter()
                if event.text:
                    yield event.text
                # Let the loop run between events even when many are queued: it notices a
                # closed connection (and serves other streams) instead of writing into a dead socket.
                await asyncio.sleep(0)
            self.completion = self.handle.result()  # the stream has ended: returns at once
            c = self.completion
            self.backend.metrics.observe_completion(c.prompt_tokens, c.completion_tokens, c.cached_tokens)
        finally:
            self.cancel()

    async def run(self, request=None):
        """The whole Completion; cancels the engine request if `request`'s client disconnects.

        A waiter thread blocks on the handle, so the event loop is woken once at the end rather
        than once per token (per-token wake-ups slow the engine thread down through the GIL).
        """
        loop = asyncio.get_running_loop()
        finished = loop.run_in_executor(self.backend.waiters, self.handle.result)
        try:
            while True:
                done, _ = await asyncio.wait({finished}, timeout=DISCONNECT_POLL_S)
                if done:
                    break
                if request is not None and await request.is_disconnected():
                    self.backend.metrics.disconnects.inc()
                    raise ClientGone()
            self.completion = c = finished.result()  # EngineError if generation failed
            self.backend.metrics.observe_completion(c.prompt_tokens, c.completion_tokens, c.cached_tokens)
            return c
        finally:
            self.cancel()  # frees the waiter thread too: a cancelled handle finishes at once

    async def final(self):
        """The Completion after the stream was cut short by the server (e.g. n_indent)."""
        if self.completion is None:
            try:
                self.completion = c = await asyncio.to_thread(self.handle.result, 30.0)
            except TimeoutError:
                log.warning("engine request did not finish 30 s after cancel")
            else:
                self.backend.metrics.observe_completion(c.prompt_tokens, c.completion_tokens, c.cached_tokens)
        return self.completion

    # ---- timings (milliseconds) -----------------------------------------------------------------
    @property
    def prompt_ms(self) -> float:
        c = self.completion
        if c is not None and getattr(c, "prompt_ms", 0):
            return float(c.prompt_ms)
        end = self.t_first or self.t_end or time.perf_counter()
        return (end - self.t_start) * 1000.0

    @property
    def decode_ms(self) -> float:
        c = self.completion
        if c is not None and getattr(c, "decode_ms", 0):
            return float(c.decode_ms)
        if self.t_first is None:
            return 0.0
        return ((self.t_end or time.perf_counter()) - self.t_first) * 1000.0

    @property
    def total_ms(self) -> float:
        return ((self.t_end or time.perf_counter()) - self.t_start) * 1000.0


def guarded_stream(body: AsyncIterator[str], gens: list[Generation], media_type: str):
    """A StreamingResponse that cancels `gens` however the response ends (finished, client gone,
    or never started because the client left before the first byte)."""
    from fastapi.responses import StreamingResponse

    class _Guarded(StreamingResponse):
        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                for g in gens:
                    g.cancel()

    return _Guarded(body, media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def run_all(gens: list[Generation], request) -> list:
    """Wait for several generations (n > 1); if one fails or the client leaves, cancel the rest."""
    try:
        return list(await asyncio.gather(*(g.run(request) for g in gens)))
    finally:
        for g in gens:
            g.cancel()


async def merge_deltas(gens: list[Generation]) -> AsyncIterator[tuple[int, str | None]]:
    """Interleave several streams as (index, text); (index, None) marks the end of one."""
    if len(gens) == 1:
        try:
            async for text in gens[0].deltas():
                yield 0, text
            yield 0, None
        finally:
            gens[0].cancel()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, g: Generation):
        try:
            async for text in g.deltas():
                await queue.put((i, text, None))
            await queue.put((i, None, None))
        except BaseException as exc:  # re-raised in the consumer below
            await queue.put((i, None, exc))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(gens)
        while remaining:
            i, text, exc = await queue.get()
            if exc is not None:
                raise exc
            if text is None:
                remaining -= 1
            yield i, text
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gens:
            g.cancel()
