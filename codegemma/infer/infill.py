"""llama.cpp's "infill" sampler (llama_sampler_infill_apply in src/llama-sampler.cpp), for FIM.

Given the candidates the earlier samplers left (sorted, most likely first): if end-of-generation
tokens are likely enough against text (3 * p(eog) * n > p(text)), keep only them; otherwise merge
the probability of tokens whose text is a prefix of another's into the likelier of the two, keep
the text tokens with p >= 0.2 and the end-of-generation ones, then keep those with at least
1 / (texts kept + 1) of the renormalised mass. If no text token survives, the answer ends (one
end-of-turn token). Kept tokens keep their logits: the final pick is a softmax over them. Token
texts are llama.cpp's token_to_piece(special=False): control tokens have none.
"""

from __future__ import annotations

import math


class InfillSampler:
    def __init__(self, tokenizer=None, eog_ids=()):
        self.eog = frozenset(int(i) for i in eog_ids)
        self._tok = tokenizer
        self._pieces: dict[int, bytes] = {}
        self._control: frozenset[int] | None = None
        self.eot = None
        if tokenizer is not None:
            self.eot = tokenizer.token_id("end_of_turn") if tokenizer.has("end_of_turn") else tokenizer.eos_id

    def __call__(self, cands: list) -> list:
        """cands: [(logit, id, seen)] sorted by logit, descending -> the candidates kept."""
        if not cands:
            return cands
        p = softmax([c[0] for c in cands])
        is_eog = [c[1] in self.eog for c in cands]
        p_eog = sum(q for q, e in zip(p, is_eog) if e)
        p_txt = sum(q for q, e in zip(p, is_eog) if not e)
        if 3 * p_eog * len(cands) > p_txt:
            return [c for c, e in zip(cands, is_eog) if e]
        pieces = [self.piece(c[1]) for c in cands]
        alive = [True] * len(cands)
        by_piece: dict[bytes, list[int]] = {}
        for j, b in enumerate(pieces):
            by_piece.setdefault(b, []).append(j)
        pairs = sorted((i0, i1) for i1, b in enumerate(pieces) for n in range(1, len(b) + 1)
                       for i0 in by_piece.get(b[:n], ()) if i0 != i1)
        for i0, i1 in pairs:  # llama.cpp's double loop, visiting only the pairs where i0 prefixes i1
            if not (alive[i0] and alive[i1]):
                continue
            dst, src = (i1, i0) if p[i1] > p[i0] else (i0, i1)
            p[dst] += p[src]
            p[src], alive[src] = 0.0, False
        kept = [j for j in range(len(cands)) if alive[j] and (p[j] >= 0.2 or is_eog[j])]
        n_txt = sum(1 for j in kept if not is_eog[j])
        if n_txt == 0:
            return [(1.0, self.eot, False)]
        total = sum(p[j] for j in kept)
        thold = 1.0 / (n_txt + 1)
        return [cands[j] for j in kept if p[j] / total >= thold or is_eog[j]]

    def piece(self, tid: int) -> bytes:
        """A token's text as llama.cpp's token_to_piece(special=False) gives it (control tokens: empty)."""
        b = self._pieces.get(tid)
        if b is None:
            if self._control is None:
                self._control = frozenset(self._tok.special_ids.values()) | self.eog
                backend = getattr(self._tok, "backend", None)
                if backend is not None:
                    self._control |= frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
            b = b"" if tid in self._control else (self._tok.piece_bytes(tid) or b"")
            self._pieces[tid] = b
        return b


def softmax(logits: list[float]) -> list[float]:
    """Probabilities of a short list of logits (the Python side of the sampler chains)."""
    if not logits:
        return []
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    s = sum(e)
    return [x / s for x in e]
