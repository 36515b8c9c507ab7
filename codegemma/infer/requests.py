"""What a caller holds: the request handle, the events it streams and the final Completion.

The engine thread produces; any other thread (or an asyncio task) consumes. A handle's events go
through a thread-safe queue ending with a sentinel; `result()` waits on a threading.Event, so it
works whether or not anyone read the stream.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Iterator


class QueueFullError(RuntimeError):
    """The engine's waiting queue is full: a server answers 429/503 and the client retries later."""


class EngineError(RuntimeError):
    """Generation failed inside the engine (e.g. out of memory); the message says why."""


@dataclass
class TokenLogprob:
    """One generated token's log-probability and its most likely alternatives [(id, logprob)], best
    first. In `logprobs`: log-softmax of the raw model logits (OpenAI's definition); in `probs`:
    of the distribution the sampler chain left (llama.cpp's post-sampling probabilities, as logs;
    -inf for tokens the samplers removed)."""
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class StreamEvent:
    text: str  # new text since the previous event (UTF-8 complete, stop strings withheld)
    token_ids: list[int]  # ids generated since the previous event (the stop token included)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per token id, when asked for
    probs: list[TokenLogprob] = field(default_factory=list)
    progress: "PromptProgress | None" = None  # a prompt-progress event (submit(progress=True)): no text


@dataclass
class PromptProgress:
    """llama.cpp's prompt_progress: the prompt's tokens, those reused from the cache, those
    processed so far (the reused ones included) and the ms since prompt processing began."""
    total: int
    cache: int
    processed: int
    time_ms: float


@dataclass
class Completion:
    text: str  # the generated text, cut before any stop string or stop token
    token_ids: list[int]  # every generated id, a final stop token included
    finish_reason: str  # "stop" | "length" | "cancelled" | "time"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose keys/values were reused from the prefix cache
    stop_text: str | None = None  # the stop string matched, or the text of the stop token
    stop_token_id: int | None = None  # set when a stop token (eos, FIM sentinel, ...) ended it
    prompt_ms: float = 0.0  # prefill time
    decode_ms: float = 0.0  # from the first generated token to the end
    queue_ms: float = 0.0  # waiting for a free slot
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token id, when asked for
    probs: list[TokenLogprob] = field(default_factory=list)


_END = object()


class RequestHandle:
    """Returned by Engine.submit: stream events, wait for the result, or cancel."""

    def __init__(self, request_id: int, cancel_fn: Callable[["RequestHandle"], None]):
        self.id = request_id
        self._events: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._completion: Completion | None = None
        self._error: BaseException | None = None
        self._cancel_fn = cancel_fn
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # aevents() readers

    # ---- producer side (engine) ------------------------------------------------------------
    def _push(self, text: str, token_ids: list[int], logprobs=(), probs=()) -> None:
        if (text or token_ids) and not self._done.is_set():
            self._events.put(StreamEvent(text, list(token_ids), list(logprobs), list(probs)))
            self._wake()

    def _progress(self, progress: PromptProgress) -> None:
        if not self._done.is_set():
            self._events.put(StreamEvent("", [], progress=progress))
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that reader's event loop is closed: nobody left to wake
                with self._lock:
                    self._waiters.remove((loop, event))

    def _finish(self, completion: Completion | None, error: BaseException | None = None) -> bool:
        """First call wins (the engine and a cancelling caller may race); returns whether it won."""
        with self._lock:
            if self._done.is_set():
                return False
            self._completion, self._error = completion, error
            self._done.set()
        self._events.put(_END)
        self._wake()
        return True

    # ---- consumer side ---------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    def events(self, timeout: float | None = None) -> Iterator[StreamEvent]:
        """Text deltas as they are produced; ends when the request finishes (then see result())."""
        while True:
            item = self._events.get(timeout=timeout)
            if item is _END:
                self._events.put(_END)  # a second iteration ends at once too
                if self._error is not None:
                    raise EngineError(str(self._error)) from self._error
                return
            yield item

    async def aevents(self) -> AsyncIterator[StreamEvent]:
        """The same stream for asyncio code (FastAPI): the engine thread wakes this loop; never blocks it."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        try:
            while True:
                try:
                    item = self._events.get_nowait()
                except queue.Empty:
                    waiter[1].clear()
                    if self._events.empty():  # re-check after clear: a put may have raced us
                        await waiter[1].wait()
                    continue
                if item is _END:
                    self._events.put(_END)
                    if self._error is not None:
                        raise EngineError(str(self._error)) from self._error
                    return
                yield item
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def result(self, timeout: float | None = None) -> Completion:
        """Block until the request finishes; raises EngineError if generation failed."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        if self._error is not None:
            raise EngineError(str(self._error)) from self._error
        assert self._completion is not None
        return self._completion

    async def aresult(self) -> Completion:
        """Wait without blocking the event loop (drains the stream if nobody else reads it)."""
        async for _ in self.aevents():
            pass
        return self.result()

    def cancel(self) -> None:
        """Stop generating now; the slot is freed before the next decode step."""
        self._cancel_fn(self)


@dataclass
class EngineStats:
    requests_submitted: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    prompt_tokens: int = 0
    prefill_tokens: int = 0  # prompt tokens actually computed (prompt_tokens - reused)
    tokens_generated: int = 0
    decode_steps: int = 0
    decode_rows: int = 0  # requests decoded, summed over decode steps (busy slots per step = rows / steps)
    prefix_cache_hits: int = 0  # requests that reused at least one cached prompt token
    prefix_cache_tokens: int = 0  # prompt tokens reused in total
    spec_steps: int = 0  # speculative verification passes (each also counted in decode_steps)
    spec_draft_tokens: int = 0  # draft tokens proposed for verification
    spec_accepted_tokens: int = 0  # draft tokens accepted (greedy: confirmed; sampled: the rejection rule)
    reuse_chunks: int = 0  # shifted chunks of a slot's cache reused at new positions (--cache-reuse)
    reuse_tokens: int = 0  # prompt tokens those chunks held (not prefilled again)
    requests_failed: int = 0  # requests ended by an error (e.g. non-finite logits); the others go on
