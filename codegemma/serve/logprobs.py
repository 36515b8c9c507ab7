"""Token probabilities in each API's shape, from the engine's per-token `TokenLogprob`s
(token_id, logprob, top: [(id, logprob)]): llama.cpp's `completion_probabilities` (n_probs, with
post_sampling_probs as probabilities), OpenAI's legacy completions `logprobs` and chat
`logprobs.content`.
"""

from __future__ import annotations

import math
from functools import lru_cache


class Pieces:
    """Token id -> (text, UTF-8 bytes), cached: the same few thousand ids recur in every reply."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.piece = lru_cache(maxsize=65536)(self._piece)

    def _piece(self, tid: int) -> tuple[str, list[int]]:
        text = self._tok.decode([tid])
        raw = self._tok.piece_bytes(tid)
        return text, list(text.encode("utf-8") if raw is None else raw)

    def text(self, tid: int) -> str:
        return self.piece(tid)[0]


def _lp(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # JSON has no -inf; OpenAI's floor for "impossible"


def llamacpp(items, pieces: Pieces, n: int, post_sampling: bool = False) -> list[dict]:
    """llama.cpp's completion_probabilities: one entry per token, with its top `n` alternatives
    (log-probabilities, or with post_sampling probabilities of the distribution sampled from,
    leaving out tokens the samplers removed)."""
    out = []
    for item in items:
        text, raw = pieces.piece(item.token_id)
        if post_sampling:
            top = [{"id": i, "token": pieces.text(i), "bytes": pieces.piece(i)[1], "prob": math.exp(lp)}
                   for i, lp in item.top[:n] if math.isfinite(lp) and lp > -math.inf and math.exp(lp) > 0]
            out.append({"id": item.token_id, "token": text, "bytes": raw, "prob": math.exp(item.logprob)
                        if math.isfinite(item.logprob) else 0.0, "top_probs": top})
        else:
            top = [{"id": i, "token": pieces.text(i), "bytes": pieces.piece(i)[1], "logprob": _lp(lp)}
                   for i, lp in item.top[:n]]
            out.append({"id": item.token_id, "token": text, "bytes": raw, "logprob": _lp(item.logprob),
                        "top_logprobs": top})
    return out


def openai_completion(items, pieces: Pieces, n: int, offset: int = 0) -> dict:
    """OpenAI's legacy completions logprobs: parallel lists, top alternatives as {text: logprob}.
    `offset` is where the first token's text starts in the choice's text (after an echo)."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for item in items:
        text = pieces.text(item.token_id)
        tokens.append(text)
        token_logprobs.append(_lp(item.logprob))
        alts: dict[str, float] = {}
        for i, lp in item.top[:n]:
            alts.setdefault(pieces.text(i), _lp(lp))
        top.append(alts)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def openai_chat(items, pieces: Pieces, n: int) -> dict:
    """OpenAI's chat logprobs: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}."""
    content = []
    for item in items:
        text, raw = pieces.piece(item.token_id)
        content.append({"token": text, "logprob": _lp(item.logprob), "bytes": raw,
                        "top_logprobs": [{"token": pieces.text(i), "logprob": _lp(lp), "bytes": pieces.piece(i)[1]}
                                         for i, lp in item.top[:n]]})
    return {"content": content, "refusal": None}
