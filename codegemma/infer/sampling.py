"""Next-token choice for a batch of requests that each carry their own sampling settings.

Order and semantics follow transformers' generate: repetition penalty (a logits processor applied
to every token already in the sequence, prompt included), then temperature, top-k and top-p.
Temperature 0 means greedy. Randomness comes from one `torch.Generator` per request, so a seeded
request gives the same tokens whatever else shares its batch: each sampled row draws exactly one
uniform number per step from its own generator and picks the token by inverse CDF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128  # 0 = only evaluate the prompt into the cache (llama.cpp n_predict=0)
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut
    repetition_penalty: float = 1.0  # HF semantics: divide positive logits, multiply negative ones
    seed: int | None = None  # None = a fresh random seed per request
    stop: tuple[str, ...] = field(default_factory=tuple)  # extra stop strings (cut before them)
    max_time_ms: float | None = None  # llama.cpp t_max_predict_ms: limit counted from the first token

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if self.max_time_ms is not None and self.max_time_ms <= 0:
            raise ValueError(f"max_time_ms must be > 0 or None, got {self.max_time_ms}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator per request: only one uniform number per step is drawn from it."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def apply_repetition_penalty(logits: torch.Tensor, history: list[torch.Tensor | None],
                             penalties: list[float]) -> torch.Tensor:
    """logits [B, V] float; history[i]: LongTensor of the ids seen so far by row i (on logits' device)."""
    for i, (ids, penalty) in enumerate(zip(history, penalties)):
        if penalty == 1.0 or ids is None or ids.numel() == 0:
            continue
        row = logits[i]
        seen = row.gather(0, ids)
        row.scatter_(0, ids, torch.where(seen > 0, seen / penalty, seen * penalty))
    return logits


def _sorted_probs(logits: torch.Tensor, params: list[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, top-k, top-p for rows that sample. logits [S, V] float -> (probs sorted in
    descending order with the cut entries zeroed, unnormalised [S, V]; the sort order [S, V])."""
    dev, vocab = logits.device, logits.shape[-1]
    temp = torch.tensor([p.temperature for p in params], device=dev)[:, None]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=dev)
    top_p = torch.tensor([p.top_p for p in params], device=dev)[:, None]
    sorted_logits, order = (logits / temp).sort(dim=-1, descending=True)  # [S, V]
    ranks = torch.arange(vocab, device=dev)[None, :]
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k[:, None].clamp(max=vocab), float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # Nucleus: keep a token while the mass before it is < top_p (so the first token always stays).
    mass_before = probs.cumsum(dim=-1) - probs
    return probs.masked_fill(mass_before >= top_p, 0.0), order


def distribution(logits: torch.Tensor, params: list[SamplingParams],
                 history: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The normalised distribution each row samples from, in vocabulary order: [B, V]
    (one-hot at the argmax for greedy rows). For tests and log-probabilities, not the hot path."""
    logits = logits.float().clone()
    if history is not None:
        logits = apply_repetition_penalty(logits, history, [p.repetition_penalty for p in params])
    out = torch.zeros_like(logits)
    for i, p in enumerate(params):
        if p.greedy:
            out[i, logits[i].argmax()] = 1.0
        else:
            probs, order = _sorted_probs(logits[i:i + 1], [p])
            out[i].scatter_(0, order[0], probs[0] / probs[0].sum())
    return out


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           history: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Pick one token per row. logits [B, V] (any float dtype) -> LongTensor [B] on logits' device."""
    logits = logits.float()
    if history is not None and any(p.repetition_penalty != 1.0 for p in params):
        logits = apply_repetition_penalty(logits.clone(), history, [p.repetition_penalty for p in params])
    greedy_ids = logits.argmax(dim=-1)  # [B]
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if not rows:
        return greedy_ids

    dev, vocab = logits.device, logits.shape[-1]
    idx = torch.tensor(rows, device=dev)
    probs, order = _sorted_probs(logits.index_select(0, idx), [params[i] for i in rows])
    cdf = probs.cumsum(dim=-1)
    u = torch.cat([torch.rand(1, generator=generators[i]) for i in rows]).to(dev)[:, None]  # [S, 1]
    pick = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=vocab - 1)  # [S, 1]
    # Never land on a cut entry (u * total can round up to the last cdf value).
    pick = torch.minimum(pick, (probs > 0).sum(-1, keepdim=True) - 1)
    out = greedy_ids.clone()
    out[idx] = order.gather(1, pick).squeeze(1)
    return out
