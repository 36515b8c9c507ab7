"""Token ids -> text as they are generated: UTF-8 safe deltas and stop strings.

Byte-fallback tokenizers can split one character over several tokens (`<0xE2><0x82><0xAC>` is
"€"); decoding a partial sequence then ends in U+FFFD. `IncrementalDetokenizer` only releases text
once the decoded tail is complete, and decodes a short window of recent tokens rather than the
whole sequence (the vLLM scheme: decode ids[prefix:] and keep what lies beyond ids[prefix:read]).

`StopStrings` finds user stop strings in the accumulated text, including ones that span tokens,
and says how much of the tail must be withheld because it might be the start of a stop string.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Deltas whose concatenation is exactly `tokenizer.decode(ids)`.

    A run of byte-fallback tokens is released only once a non-byte token follows it (or at
    flush): tokenizers decode an invalid run as one U+FFFD per byte, even where a prefix of the run
    was a valid character, so decoding a run piecewise could differ from decoding it whole. Every
    window therefore starts after a non-byte token, where decoding is context-free.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # window start: tokens before it are final
        self._read = 0  # tokens before it have been released as text
        self._byte_ids: dict[int, bool] = {}

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def _is_byte(self, token_id: int) -> bool:
        known = self._byte_ids.get(token_id)
        if known is None:
            piece = self._tok.id_to_piece(token_id) or ""
            known = self._byte_ids[token_id] = len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
        return known

    def add(self, token_id: int) -> str:
        """Append one id; return the newly complete text (may be "")."""
        self.ids.append(token_id)
        if self._is_byte(token_id):
            return ""  # the byte run may still grow
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        new_text = self._decode(self.ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            delta = new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still withheld (an incomplete character decodes as U+FFFD)."""
        if self._read == len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        new_text = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text):]


class StopStrings:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str, new_from: int) -> tuple[int, str] | None:
        """Earliest stop match that ends after `new_from` (text before it was already scanned)."""
        start = max(0, new_from - self._longest + 1)
        best: tuple[int, str] | None = None
        for s in self.stops:
            i = text.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def holdback(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        for k in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
