"""KV-cache slots and prompt-prefix reuse.

Each slot remembers the token ids whose keys/values it holds at positions 0..n-1. When a request
finishes its slot keeps them, so a later prompt that starts with the same tokens (an editor sends
nearly the same FIM prompt at every keystroke) is placed in that slot and only the differing tail
is prefilled. Stale entries past the reused prefix need no clearing: a query at position p only
attends positions <= p, and prefill overwrites them before they are ever attended.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class Slot:
    index: int
    tokens: list[int] = field(default_factory=list)  # ids cached at positions 0..len-1
    request: object | None = None  # the request decoding here, None when idle
    last_used: int = 0  # a logical clock: higher = more recently used
    # The last finished request's prompt and output ids: drafts for speculative decoding.
    prev_prompt: list[int] | None = None
    prev_output: list[int] | None = None


class SlotTable:
    def __init__(self, num_slots: int):
        self.slots = [Slot(i) for i in range(num_slots)]
        self._clock = 0

    def idle(self) -> list[Slot]:
        return [s for s in self.slots if s.request is None]

    def active(self) -> list[Slot]:
        return [s for s in self.slots if s.request is not None]

    def acquire(self, prompt: list[int], request: object) -> tuple[Slot, int]:
        """Place `request` in the idle slot sharing the longest prefix with `prompt` (else the least
        recently used one). Returns the slot and the number of prompt tokens already cached there."""
        best: Slot | None = None
        best_len = best_rank = -1
        for slot in self.idle():
            n = common_prefix_len(slot.tokens, prompt)
            # Sharing just <bos> is worth nothing: rank it as no match, so the least recently used
            # slot is taken and a slot holding a useful prefix (and its completion) survives.
            rank = n if n > 1 else 0
            if rank > best_rank or (rank == best_rank and best is not None and slot.last_used < best.last_used):
                best, best_len, best_rank = slot, n, rank
        if best is None:
            raise RuntimeError("no idle slot (the engine admits requests only when one is free)")
        self._clock += 1
        best.request, best.last_used = request, self._clock
        del best.tokens[best_len:]
        return best, best_len

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.request, slot.last_used = None, self._clock

    def forget(self, slot: Slot) -> None:
        """Drop a slot's cached ids (after a failed forward the cache contents are unknown)."""
        slot.tokens.clear()
        slot.prev_prompt = slot.prev_output = None
