"""KV-cache slots, prompt-prefix reuse and reuse of shifted chunks.

Each slot remembers the token ids whose keys/values it holds at positions 0..n-1. When a request
finishes its slot keeps them, so a later prompt that starts with the same tokens (an editor sends
nearly the same FIM prompt at every keystroke) is placed in that slot and only the differing tail
is prefilled. Stale entries past the reused part need no clearing: a query at position p only
attends positions <= p, and prefill overwrites them before they are ever attended.

Chunk reuse (llama.cpp's --cache-reuse N). Editors keep a ring buffer of context chunks ahead of
the current file and drop the oldest as the user moves: the new prompt is the old one with a
chunk removed, everything after it shifted left. After the common prefix, `reuse_plan` walks the
cached ids and the prompt as llama.cpp's server does (server-context.cpp, "n_cache_reuse"): where
a run of at least N cached ids equals the prompt at the current point, the run is kept and moved
to its new position (infer/kv.move_positions re-rotates its keys); otherwise one cached id is
skipped. Prompt tokens are never skipped, so the reused runs are contiguous in the prompt and the
prefill starts after the last one.

What is and is not exact: a moved key at layer 0 equals the key computed at its new position (up
to rounding); at deeper layers keys and values also depend on every earlier token, and the dropped
chunk is no longer there. llama.cpp accepts that approximation for the speed; so does this option,
which is why it is off unless asked for (N = 0).
"""

from __future__ import annotations

from array import array
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


def reuse_plan(cached: list[int], prompt: list[int], start: int, min_run: int) -> list[tuple[int, int, int]]:
    """Runs of `cached` to move into `prompt` after their common prefix of `start` ids, llama.cpp's
    rule: (src, dst, n) with n >= min_run, dst contiguous from `start`. Each step is a C-speed
    search for the next aligned occurrence of the prompt's next min_run ids in the cached ids at
    or after the cache cursor (the first place llama.cpp's one-by-one skipping would match)."""
    moves: list[tuple[int, int, int]] = []
    if min_run <= 0:
        return moves
    head_c = head_p = start
    buf = array("i", cached).tobytes()
    while head_c < len(cached) and head_p + min_run <= len(prompt):
        pat = array("i", prompt[head_p:head_p + min_run]).tobytes()
        i = buf.find(pat, 4 * head_c)
        while i >= 0 and i % 4:  # a hit straddling two ids
            i = buf.find(pat, i + 1)
        if i < 0:
            break
        head_c = i // 4
        n = min_run + common_prefix_len(cached[head_c + min_run:], prompt[head_p + min_run:])
        moves.append((head_c, head_p, n))
        head_c += n
        head_p += n
    return moves


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

    def acquire(self, prompt: list[int], request: object,
                reuse: int = 0) -> tuple[Slot, int, list[tuple[int, int, int]]]:
        """Place `request` in the idle slot that holds the most of `prompt` (its prefix, plus shifted
        runs of at least `reuse` ids when reuse > 0), else the least recently used one. Returns the
        slot, the number of prompt tokens cached there once `moves` (reuse_plan's runs, for the
        caller to apply to the KV cache) are done, and the moves. The slot's ids are updated."""
        best: Slot | None = None
        best_len = best_rank = -1
        best_moves: list[tuple[int, int, int]] = []
        for slot in self.idle():
            n = common_prefix_len(slot.tokens, prompt)
            moves = reuse_plan(slot.tokens, prompt, n, reuse)
            total = n + sum(m[2] for m in moves)
            # Sharing just <bos> is worth nothing: rank it as no match, so the least recently used
            # slot is taken and a slot holding a useful prefix (and its completion) survives.
            rank = total if total > 1 else 0
            if rank > best_rank or (rank == best_rank and best is not None and slot.last_used < best.last_used):
                best, best_len, best_rank, best_moves = slot, total, rank, moves
        if best is None:
            raise RuntimeError("no idle slot (the engine admits requests only when one is free)")
        self._clock += 1
        best.request, best.last_used = request, self._clock
        best.tokens[:] = prompt[:best_len]  # the prefix and the moved runs, at their new positions
        return best, best_len, best_moves

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.request, slot.last_used = None, self._clock

    def forget(self, slot: Slot) -> None:
        """Drop a slot's cached ids (after a failed forward the cache contents are unknown)."""
        slot.tokens.clear()
        slot.prev_prompt = slot.prev_output = None
