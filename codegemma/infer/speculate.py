"""Draft tokens for speculative decoding from text the engine has already seen (no draft model).

An editor sends a FIM prompt at every keystroke, and consecutive prompts mostly differ by what the
user typed. The previous request in the same slot left its prompt and its completion behind; the
new completion very often continues the same way, so those tokens make good drafts:

- "typed the suggestion": the new prompt equals the old one with text inserted at one point and
  that text is the start of the old completion -> draft the rest of the old completion;
- otherwise the last two tokens of the running sequence are looked up (prompt-lookup decoding) in
  the old prompt + completion, then in the request's own prompt + output, and the tokens that
  followed the latest occurrence are the draft.

The engine verifies a draft of k tokens in one forward pass of k + 1 positions and keeps the
longest prefix that greedy decoding produces itself (plus the token after it), so output is
exactly what token-by-token greedy decoding gives. Lookups are C-speed byte searches.
"""

from __future__ import annotations

from array import array

from codegemma.infer.prefix import common_prefix_len


def _bytes(ids: list[int]) -> bytes:
    return array("i", ids).tobytes()


def _common_suffix_len(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class _Source:
    """A token sequence to take drafts from, with its int32 bytes for bigram search."""

    def __init__(self, ids: list[int], buf: bytes | None = None):
        self.ids = ids
        self.buf = _bytes(ids) if buf is None else buf

    def after_bigram(self, a: int, b: int, k: int, end: int | None = None, tries: int = 4) -> int | None:
        """Index just after an aligned occurrence of (a, b) ending before token `end` and followed
        by tokens, else None: the latest one, or an earlier one (of the latest `tries`) if it is
        followed by more of the k wanted tokens (in a repetitive sequence the latest occurrence
        sits right before the end and offers a 1-token draft)."""
        pat = _bytes([a, b])
        stop = len(self.buf) if end is None else 4 * end
        n = len(self.ids) if end is None else end + 1
        best, best_len = None, 0
        while tries > 0:
            i = self.buf.rfind(pat, 0, stop)
            if i < 0:
                break
            stop = i + len(pat) - 1  # next: search left of this hit
            if i % 4:
                continue  # straddles two tokens
            tries -= 1
            j = i // 4 + 2
            avail = min(k, n - j)
            if avail > best_len:
                best, best_len = j, avail
            if avail >= k:
                break
        return best


class Drafter:
    """Per-request draft state. `seq` is the request's prompt + generated ids (kept by the engine)."""

    MAX_MISSES = 3  # stop drafting for a request after this many verifications in a row accept nothing

    def __init__(self, prompt: list[int], prev_prompt: list[int] | None, prev_output: list[int] | None):
        self.seq = list(prompt)
        self._own = array("i", prompt)  # the same ids as int32, for the own-sequence lookup
        self.misses = 0
        self.sources: list[_Source] = []
        if prev_prompt is not None and prev_output:
            old = prev_prompt + prev_output
            typed = _typed_suggestion(prompt, prev_prompt, prev_output)
            if typed is not None:
                self.sources.append(_Source(prompt + prev_output[typed:]))
            self.sources.append(_Source(old))

    def add(self, tid: int) -> None:
        self.seq.append(tid)
        self._own.append(tid)

    def verified(self, accepted: int) -> None:
        self.misses = 0 if accepted else self.misses + 1

    def draft(self, k: int) -> list[int]:
        """Up to k tokens predicted to follow `seq` (empty when nothing matches)."""
        seq = self.seq
        if k <= 0 or len(seq) < 2 or self.misses >= self.MAX_MISSES:
            return []
        a, b = seq[-2], seq[-1]
        n = len(seq)
        for src in self.sources:
            ids = src.ids
            # Aligned: the source continues exactly this sequence (checked on the last tokens only;
            # a wrong draft costs speed, never correctness).
            if len(ids) > n and ids[n - 1] == b and ids[n - 2] == a:
                return ids[n:n + k]
            j = src.after_bigram(a, b, k)
            if j is not None:
                return ids[j:j + k]
        # The request's own text: an earlier occurrence, never the bigram at its own end.
        j = _Source(seq, self._own.tobytes()).after_bigram(a, b, k, end=n - 1)
        return seq[j:j + k] if j is not None else []


def _typed_suggestion(prompt: list[int], prev_prompt: list[int], prev_output: list[int]) -> int | None:
    """If `prompt` is `prev_prompt` with tokens inserted at one point and those tokens start
    `prev_output` (the user typed what was suggested), the number of tokens typed; else None."""
    lead = common_prefix_len(prompt, prev_prompt)
    extra = len(prompt) - len(prev_prompt)
    if extra <= 0 or extra >= len(prev_output):
        return None
    tail = _common_suffix_len(prompt, prev_prompt, len(prev_prompt) - lead)
    if lead + tail != len(prev_prompt):  # not a pure insertion
        return None
    inserted = prompt[lead:lead + extra]
    return extra if prev_output[:extra] == inserted else None
