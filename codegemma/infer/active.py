"""Engine-side state of one request: its ids, text, stop rules and timings (touched only by the
engine thread once admitted).

Stop rules, checked after every token: a stop token (the stop id ends the text), a stop string
(the text is cut before it; it may span tokens), max_new_tokens, and llama.cpp's time limit:
once `max_time_ms` has passed since the first token, generation stops right after the next token
whose text holds a newline, so a suggestion always ends at a line end.
"""

from __future__ import annotations

import time

from codegemma.infer.detok import IncrementalDetokenizer, StopStrings
from codegemma.infer.requests import Completion, RequestHandle, TokenLogprob
from codegemma.infer.sampling import SamplingParams, make_generator


class ActiveRequest:
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
        self.pending_lp: list[TokenLogprob] = []
        self.pending_probs: list[TokenLogprob] = []
        self.logprobs: list[TokenLogprob] = []
        self.probs: list[TokenLogprob] = []
        self.next_token: int | None = None  # sampled but not yet fed to the model
        self.slot = None
        self.moves: list[tuple[int, int, int]] = []  # cached runs to move before prefill (chunk reuse)
        self.drafter = None  # speculative decoding state (infer/speculate.Drafter)
        self.draft: list[int] = []  # the drafts of the current step
        self.cached_tokens = 0
        self.cancelled = False
        self.progress = False  # report prompt progress events (llama.cpp's return_progress)
        self.t_submit = time.perf_counter()
        self.t_admit = self.t_first = self.t_prefilled = 0.0

    # ---- text handling ----------------------------------------------------------------------
    def _emit(self, upto: int) -> None:
        if upto > self.emitted or self.pending_ids:
            self.handle._push(self.text[self.emitted:upto], self.pending_ids, self.pending_lp, self.pending_probs)
            self.emitted = max(self.emitted, upto)
            self.pending_ids, self.pending_lp, self.pending_probs = [], [], []

    def add_token(self, tid: int, logprob: TokenLogprob | None = None,
                  prob: TokenLogprob | None = None) -> tuple[str, str | None, int | None] | None:
        """Account for one generated id; returns (finish_reason, stop_text, stop_id) when done."""
        self.generated.append(tid)
        self.pending_ids.append(tid)
        if logprob is not None:
            self.logprobs.append(logprob)
            self.pending_lp.append(logprob)
        if prob is not None:
            self.probs.append(prob)
            self.pending_probs.append(prob)
        if tid in self.stop_ids:
            return self._finish_text("stop", self.tokenizer.decode([tid]), tid)
        old = len(self.text)
        piece = self.detok.add(tid)
        self.text += piece
        if self.stops and len(self.text) > old:
            hit = self.stops.find(self.text, old)
            if hit is not None:
                return self._cut(hit)
        if len(self.generated) >= self.params.max_new_tokens:
            return self._finish_text("length", None, None)
        if self.params.max_time_ms is not None and self.t_first and "\n" in piece and \
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
            queue_ms=((self.t_admit or now) - self.t_submit) * 1000,
            logprobs=list(self.logprobs), probs=list(self.probs))
