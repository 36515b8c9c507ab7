"""What a request asks of the sampler: `SamplingParams`, validated so that the engine can compute
whatever it accepts.

The chain follows llama.cpp's samplers (`samplers` names them in order, as llama.vim and
llama.vscode send them): logit_bias on the raw logits first, then by default repetition penalty,
top-k, top-p, min-p and temperature; "infill" is llama.cpp's FIM sampler. The chain is applied by
infer/samplers.py. A temperature below GREEDY_TEMPERATURE is greedy (the most probable token of the
processed distribution), as llama.cpp treats temperature <= 0: dividing logits by a number that
small would overflow instead of sampling.

Every value is checked here and a bad one raises ValueError naming the field, so a server turns it
into a 400 before anything runs: non-finite numbers are refused everywhere; a top_k beyond any
vocabulary means no cut; repetition_penalty must lie in REPETITION_PENALTY_RANGE; a logit bias may
be -inf (a ban) but not +inf or NaN, and finite biases are clamped to +-LOGIT_BIAS_LIMIT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SAMPLERS = ("penalties", "top_k", "top_p", "min_p", "temperature", "infill")
DEFAULT_SAMPLERS = ("penalties", "top_k", "top_p", "min_p", "temperature")
GREEDY_TEMPERATURE = 1e-5  # below this a temperature is greedy (llama.cpp: temperature <= 0)
MAX_TEMPERATURE = 1e30  # above this every allowed token is equally likely anyway; keeps fp32 finite
REPETITION_PENALTY_RANGE = (1e-6, 1e6)  # outside: refused (5e-324 is 0 in fp32, a division by zero)
LOGIT_BIAS_LIMIT = 1e9  # finite biases are clamped to +-this, so logits + bias stay finite in fp32
MAX_TOP_K = 2 ** 31 - 1  # a larger top_k is no cut (no vocabulary is that large)
MAX_LOGPROBS = 20  # alternatives reported per token (OpenAI's top_logprobs limit)
MAX_SEED = 2 ** 64  # seeds are 64-bit (torch.Generator.manual_seed)


def _number(name: str, value, *, integer: bool = False) -> float | int:
    """`value` as a finite number (an int if `integer`), else ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128  # 0 = only evaluate the prompt into the cache (llama.cpp n_predict=0)
    temperature: float = 0.0  # 0 (or < GREEDY_TEMPERATURE) = greedy
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut
    min_p: float = 0.0  # keep tokens with p >= min_p * p(most likely); 0 = off
    repetition_penalty: float = 1.0  # HF semantics: divide positive logits, multiply negative ones
    seed: int | None = None  # None = a fresh random seed per request
    stop: tuple[str, ...] = field(default_factory=tuple)  # extra stop strings (cut before them)
    # llama.cpp's t_max_predict_ms: once this long has passed since the first token, generation
    # stops right after the next token whose text holds a newline (a suggestion ends at a line end)
    max_time_ms: float | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to the raw logit); -inf bans
    samplers: tuple[str, ...] | None = None  # llama.cpp's chain, in order; None = DEFAULT_SAMPLERS
    logprobs: int = 0  # > 0: log-probabilities of each token and its top-N alternatives (<= 20)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ()))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
        n = _number("max_new_tokens", self.max_new_tokens, integer=True)
        if n < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {n}")
        set_(self, "max_new_tokens", n)
        t = _number("temperature", self.temperature)
        if t < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {t}")
        set_(self, "temperature", t)
        k = _number("top_k", self.top_k, integer=True)
        if k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no cut), got {k}")
        set_(self, "top_k", 0 if k > MAX_TOP_K else k)
        p = _number("top_p", self.top_p)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {p}")
        set_(self, "top_p", p)
        m = _number("min_p", self.min_p)
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {m}")
        set_(self, "min_p", m)
        r = _number("repetition_penalty", self.repetition_penalty)
        lo, hi = REPETITION_PENALTY_RANGE
        if not lo <= r <= hi:
            raise ValueError(f"repetition_penalty must be in [{lo:g}, {hi:g}] (1.0 = off), got {r:g}")
        set_(self, "repetition_penalty", r)
        if self.seed is not None:
            s = _number("seed", self.seed, integer=True)
            if not 0 <= s < MAX_SEED:
                raise ValueError(f"seed must be in [0, 2**64), got {s}")
            set_(self, "seed", s)
        if self.max_time_ms is not None:
            ms = _number("max_time_ms", self.max_time_ms)
            if ms <= 0:
                raise ValueError(f"max_time_ms must be > 0 or None, got {ms}")
            set_(self, "max_time_ms", ms)
        set_(self, "logit_bias", _check_bias(self.logit_bias))
        if self.samplers is not None:
            names = (self.samplers,) if isinstance(self.samplers, str) else tuple(self.samplers)
            for name in names:
                if name not in SAMPLERS:
                    raise ValueError(f"samplers: unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
            set_(self, "samplers", names)
        lp = _number("logprobs", self.logprobs, integer=True)
        if not 0 <= lp <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {lp}")
        set_(self, "logprobs", lp)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE

    @property
    def chain(self) -> tuple[str, ...]:
        """The samplers that change anything for these settings, in order (llama.cpp applies
        temperature only when a given list names it)."""
        off = {"penalties": self.repetition_penalty == 1.0, "top_k": self.top_k == 0,
               "top_p": self.top_p >= 1.0, "min_p": self.min_p <= 0.0,
               "temperature": self.temperature == 1.0 or self.greedy, "infill": False}
        return tuple(s for s in (self.samplers or DEFAULT_SAMPLERS) if not off[s])

    @property
    def penalized(self) -> bool:
        """Whether the repetition penalty applies (it needs the ids seen so far)."""
        return "penalties" in self.chain


def _check_bias(bias) -> tuple[tuple[int, float], ...]:
    items = bias.items() if isinstance(bias, dict) else bias
    out: dict[int, float] = {}
    try:
        pairs = [tuple(item) for item in items]
    except TypeError:
        raise ValueError(f"logit_bias must map token ids to numbers, got {bias!r}") from None
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"logit_bias entries are (token id, bias) pairs, got {pair!r}")
        tid = _number("logit_bias token id", pair[0], integer=True)
        if tid < 0:
            raise ValueError(f"logit_bias token id must be >= 0, got {tid}")
        value = pair[1]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value == math.inf:
            raise ValueError(f"logit_bias for token {tid} must be a number or -inf (a ban), got {value!r}")
        out[tid] = value if value == -math.inf else max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, float(value)))
    return tuple(sorted(out.items()))


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator per request: one uniform number is drawn from it per generated token."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen
