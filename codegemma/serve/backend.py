"""The served model seen from the routers: prompts within the context, sampling, submission, and one
submitted request (`Generation`).

The server has no generation logic: prompts come from the one prompt builder (codegemma.fim.prompt)
and run on the engine. A router asks:

- `Backend.fim_prompt / text_prompt / token_prompt / chat_prompt` -> a `Prompt` (ids that fit the
  context with the tokens to generate, and what was cut); builder errors become 400s, a prompt that
  may not be cut and does not fit becomes llama.cpp's exceed_context_size_error.
- `Backend.sampling(prompt, ...)` -> SamplingParams (their ValueErrors become 400s).
- `Backend.start(prompt, params, guard=None)` -> `Generation` (429 when the queue is full).

A `Generation` streams `Delta`s (text, token ids, log-probabilities) or waits for the whole
`Completion`; either way it cancels the engine request when its consumer stops early. Waiting for
several generations, streaming them interleaved, disconnects and the 499 path are in protocol.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

from codegemma.fim.format import stop_token_ids
from codegemma.fim.prompt import ContextOverflow, Prompt, PromptBuilder, PromptError
from codegemma.serve.errors import APIError
from codegemma.serve.limits import check_stops
from codegemma.serve.metrics import ServerMetrics

log = logging.getLogger("codegemma.serve")


class ClientGone(Exception):
    """The HTTP client disconnected; its generation was cancelled."""


@dataclass
class Delta:
    """What one step of a stream adds: text (after the generation's guard), the ids generated
    since the previous delta, and their log-probabilities when the request asked for them."""
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # TokenLogprob per token (raw model distribution)
    probs: list = field(default_factory=list)  # TokenLogprob per token after the sampler chain
    progress: Any = None  # infer.requests.PromptProgress of a prompt-progress delta (no text then)


class Backend:
    """One served model: engine + tokenizer + the name clients call it by."""

    def __init__(self, engine, tokenizer, model_name: str, config=None, model_dir: str | None = None,
                 fim_mode: str = "psm", n_predict: int | None = None, temperature: float | None = None,
                 seed: int | None = None, aliases: Sequence[str] = (), tags: Sequence[str] = ()):
        self.engine = engine
        # llama-server's --alias and --tags, listed by /v1/models (any model name is accepted anyway)
        self.aliases, self.tags = sorted(aliases) or [model_name], sorted(tags)
        # llama-server's --temp and --seed: the defaults of llama.cpp-route requests that set none
        self.default_temperature = temperature
        self.default_seed = seed
        # tokens to generate for a request that sets no limit (llama-server's --n-predict); None:
        # what the context leaves
        self.n_predict = n_predict if n_predict is not None and n_predict >= 0 else None
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.model_dir = model_dir
        self.n_ctx = int(engine.max_seq_len)
        # fim_mode: the order infill requests are rendered in unless a request names one
        # (PSM for CodeGemma; codegemma-nano completes better from SPM prompts)
        self.prompts = PromptBuilder(tokenizer, self.n_ctx, fim_mode)
        self.stop_ids = frozenset(stop_token_ids(tokenizer))  # the engine ends a request on these
        self.fim_mode = self.prompts.fim_mode
        self.in_flight = 0  # Generations started and not yet closed (touched on the event loop only)
        # Threads that wait for whole completions (cheap: blocked on an Event); see Generation.result.
        # One per request the engine can hold (running + queued), plus a few for n > 1 fan-out.
        capacity = int(getattr(engine, "max_slots", 8)) + int(getattr(engine, "max_queue", 64)) + 16
        self.waiters = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="codegemma-wait")
        self.metrics = ServerMetrics(engine.stats, lambda: self.in_flight)
        self.created = int(time.time())

    # ---- prompts (built by codegemma.fim.prompt; its errors are the client's: 400) -------------
    def _build(self, method, *args, **kwargs) -> Prompt:
        try:
            prompt = method(*args, **kwargs)
        except ContextOverflow as exc:
            raise APIError(400, str(exc), "prompt", error_type="exceed_context_size_error",
                           fields={"n_prompt_tokens": exc.n_prompt_tokens, "n_ctx": exc.n_ctx}) from None
        except PromptError as exc:
            raise APIError(400, str(exc)) from None
        if prompt.truncated:
            self.metrics.truncated.inc()
        return prompt

    def fim_prompt(self, prefix: str, suffix: str, *, max_new_tokens: int | None, path: str | None = None,
                   context: Sequence[tuple[str, str]] = (), middle: str = "", mode: str | None = None,
                   n_ctx: int | None = None) -> Prompt:
        if not self.tokenizer.has_fim:
            raise APIError(501, "infill is not supported by this model: its tokenizer has no "
                                "<|fim_prefix|>/<|fim_suffix|>/<|fim_middle|> tokens; serve a CodeGemma model")
        return self._build(self.prompts.fim, prefix, suffix, path=path, context=context, middle=middle,
                           mode=mode, max_new_tokens=self.predict_limit(max_new_tokens), n_ctx=n_ctx)

    def text_prompt(self, text: str, *, max_new_tokens: int | None, n_ctx: int | None = None,
                    cut: bool = True) -> Prompt:
        """A prompt used verbatim (special-token texts in it become control tokens). A rendered FIM
        prompt is always fitted; other text is cut at its start, or with cut=False refused when it
        does not fit (llama.cpp's and OpenAI's behaviour)."""
        return self._build(self.prompts.text, text, max_new_tokens=self.predict_limit(max_new_tokens), n_ctx=n_ctx,
                           cut=cut)

    def token_prompt(self, ids: Sequence[int], *, max_new_tokens: int | None, n_ctx: int | None = None,
                     cut: bool = True) -> Prompt:
        """Token ids sent by the client, run as given."""
        return self._build(self.prompts.tokens, ids, max_new_tokens=self.predict_limit(max_new_tokens), n_ctx=n_ctx,
                           cut=cut)

    def chat_prompt(self, messages: list[dict[str, str]], *, max_new_tokens: int | None,
                    n_ctx: int | None = None, continue_final: bool = True, add_generation_prompt: bool = True) -> Prompt:
        return self._build(self.prompts.chat, messages, max_new_tokens=self.predict_limit(max_new_tokens), n_ctx=n_ctx,
                           continue_final=continue_final, add_generation_prompt=add_generation_prompt)

    # ---- running --------------------------------------------------------------------------------
    def sampling(self, prepared: Prompt, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] = (), max_time_ms: float | None = None,
                 logit_bias: Sequence[tuple[int, float]] = (), samplers: Sequence[str] | None = None,
                 logprobs: int = 0, max_new_tokens: int | None = None, names: Mapping[str, str] | None = None):
        """SamplingParams for `prepared`. `names`: the route's names of the engine's fields (a refused
        `repetition_penalty` is the client's `repeat_penalty`), so a 400 names what the client sent. The CodeGemma stop tokens (FIM sentinels, file separator,
        eos, end_of_turn) are always on: the engine stops on their ids, so clients need not send them.
        Every route's `stop` passes here, so its caps (limits.check_stops) hold for all of them."""
        from codegemma.infer.sampling import SamplingParams

        if top_p is not None and top_p <= 0:  # top_p 0 keeps only the best token: greedy
            temperature, top_p = 0.0, 1.0
        limit = prepared.max_new_tokens if max_new_tokens is None else min(max_new_tokens, prepared.max_new_tokens)
        banned = sum(1 for _, b in logit_bias if b == -math.inf)
        if banned >= self.tokenizer.vocab_size:
            name = (names or {}).get("logit_bias", "logit_bias")
            raise APIError(400, f"'{name}' bans every token of the vocabulary: nothing could be generated; "
                                "leave at least one token allowed", name)
        try:
            return SamplingParams(
                max_new_tokens=limit, temperature=max(0.0, float(temperature or 0.0)), top_k=max(0, int(top_k or 0)),
                top_p=float(top_p if top_p is not None else 1.0), min_p=float(min_p or 0.0),
                repetition_penalty=float(repetition_penalty or 1.0),
                # the APIs' 64-bit signed seeds (OpenAI, Ollama, Mistral) as the engine's unsigned ones
                seed=None if seed is None else int(seed) % 2**64, stop=check_stops(stop),
                max_time_ms=max_time_ms or None, logit_bias=tuple(logit_bias),
                samplers=None if samplers is None else tuple(samplers), logprobs=int(logprobs or 0))
        except ValueError as exc:
            message = str(exc)
            field = message.split(" ", 1)[0]
            if names and field in names:
                message = names[field] + message[len(field):]
            raise APIError(400, message) from None

    def predict_limit(self, n: int | None) -> int | None:
        """The limit of a request asking for `n` tokens (None or negative: no limit of its own, so
        the server's --n-predict if set, as llama-server does)."""
        return self.n_predict if n is None or n < 0 else n

    def start(self, prepared: Prompt, params, guard=None, progress: bool = False) -> "Generation":
        """Submit one request. `guard` (optional) watches the text as it grows and may end it early
        (llama.cpp's n_indent): it has feed(text) -> text to send, .stopped, flush() -> rest.
        progress: the stream also carries prompt-progress deltas (llama.cpp's return_progress)."""
        from codegemma.infer.requests import QueueFullError

        try:
            handle = self.engine.submit(prepared.ids, params, progress=progress)
        except ValueError as exc:  # the engine refuses the prompt (e.g. empty): the client's mistake
            raise APIError(400, f"prompt refused: {exc}", "prompt") from None
        except QueueFullError:
            self.metrics.rejected.inc()
            raise APIError(429, "the server is busy: its request queue is full; retry in a moment",
                           headers={"Retry-After": "1"}) from None
        return Generation(self, handle, prepared, guard)

    def start_all(self, jobs: Sequence[tuple[Prompt, Any]], guard=None, progress: bool = False) -> list["Generation"]:
        """Submit several requests (guard: a factory, one guard each); if one is refused, cancel
        those already submitted."""
        gens: list[Generation] = []
        try:
            for prepared, params in jobs:
                gens.append(self.start(prepared, params, guard() if guard else None, progress))
        except BaseException:
            for g in gens:
                g.cancel()
            raise
        return gens

    def warm_params(self):
        """llama.cpp's n_predict=0: evaluate the prompt into the prefix cache, generate nothing."""
        from codegemma.infer.sampling import SamplingParams

        return SamplingParams(max_new_tokens=0)

    def stats(self) -> dict[str, Any]:
        return dict(self.engine.stats())

    def close(self) -> None:
        """Cancel everything (waiting threads return as their handles finish) and stop the engine."""
        self.engine.close()
        self.waiters.shutdown(wait=False, cancel_futures=True)


class Generation:
    """One submitted engine request, seen from the server."""

    def __init__(self, backend: Backend, handle, prepared: Prompt, guard=None):
        self.backend = backend
        self.handle = handle
        self.prepared = prepared
        self.guard = guard
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.completion = None
        self.text = ""  # the text delivered so far (cut by the guard, if it stopped the request)
        self._open = True
        backend.in_flight += 1

    @property
    def cut_by_guard(self) -> bool:
        return self.guard is not None and self.guard.stopped

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.t_end = time.perf_counter()
            self.backend.in_flight -= 1

    def cancel(self) -> None:
        if self.completion is None:
            self.handle.cancel()
        self._close()

    def _settle(self) -> None:
        """Take the Completion once the handle is done (cancel finishes it at once)."""
        if self.completion is None:
            self.completion = c = self.handle.result(0)
            self.backend.metrics.observe_completion(c.prompt_tokens, c.completion_tokens, c.cached_tokens,
                                                    c.prompt_ms, c.decode_ms)
            if self.guard is None:
                self.text = c.text

    async def deltas(self) -> AsyncIterator[Delta]:
        """Deltas as they are generated. Leaving the loop early (break, disconnect) cancels the
        request; a guard that stops the text cancels it too, and the stream ends there."""
        try:
            async for event in self.handle.aevents():
                if event.progress is not None:
                    yield Delta("", progress=event.progress)
                    continue
                if self.t_first is None:
                    self.t_first = time.perf_counter()
                text = event.text
                if self.guard is not None:
                    text = self.guard.feed(text)
                self.text += text
                yield Delta(text, list(event.token_ids), list(event.logprobs), list(event.probs))
                if self.cut_by_guard:
                    self.handle.cancel()
                    break
                # Let the loop run between events even when many are queued: it notices a
                # closed connection (and serves other streams) instead of writing into a dead socket.
                await asyncio.sleep(0)
            if self.guard is not None:
                rest = self.guard.flush()
                if rest:
                    self.text += rest
                    yield Delta(rest)
            self._settle()
        finally:
            self.cancel()

    async def result(self, request=None):
        """The whole Completion (self.text: its text, cut by the guard); cancels the engine request
        and raises ClientGone if `request`'s client disconnects meanwhile.

        Without a guard a waiter thread blocks on the handle, so the event loop is woken once at the
        end rather than once per token (per-token wake-ups slow the engine thread through the GIL).
        """
        async def drain():
            async for _ in self.deltas():
                pass

        loop = asyncio.get_running_loop()
        if self.guard is None:
            waiting = loop.run_in_executor(self.backend.waiters, self.handle.result)
        else:
            waiting = asyncio.ensure_future(drain())
        try:
            await until_done(waiting, request)
            if self.guard is None:
                waiting.result()  # EngineError if generation failed
                self._settle()
            return self.completion
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
            self.cancel()  # frees the waiter thread too: a cancelled handle finishes at once

    # ---- timings (milliseconds) -----------------------------------------------------------------
    @property
    def prompt_ms(self) -> float:
        c = self.completion
        if c is not None and c.prompt_ms:
            return float(c.prompt_ms)
        end = self.t_first or self.t_end or time.perf_counter()
        return (end - self.t_start) * 1000.0

    @property
    def decode_ms(self) -> float:
        c = self.completion
        if c is not None and c.decode_ms:
            return float(c.decode_ms)
        if self.t_first is None:
            return 0.0
        return ((self.t_end or time.perf_counter()) - self.t_first) * 1000.0

    @property
    def total_ms(self) -> float:
        return ((self.t_end or time.perf_counter()) - self.t_start) * 1000.0


DISCONNECT_POLL_S = 0.2  # how often a non-streaming request checks that its client is still there


async def until_done(waiting: asyncio.Future, request) -> None:
    """Wait for `waiting`, checking every DISCONNECT_POLL_S that `request`'s client is still there;
    ClientGone if it left (the caller cancels what it started). The disconnect is counted by the
    middleware that sees it (app.GuardMiddleware), streaming or not."""
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if done:
            return
        if request is not None and await request.is_disconnected():
            raise ClientGone()
