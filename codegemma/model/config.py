"""Gemma 1 model shapes as data: the presets and the Hugging Face config.json mapping.

No torch here: a config can be built, counted and compared without allocating anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GemmaConfig:
    vocab_size: int = 256000  # HF checkpoints; Google's JAX ones pad the embedding to 256128
    hidden_size: int = 2048  # d_model
    intermediate_size: int = 16384  # GeGLU inner size (gate and up each)
    num_hidden_layers: int = 18
    num_attention_heads: int = 8
    num_key_value_heads: int = 1  # 1 = MQA, == num_attention_heads = MHA, otherwise GQA
    head_dim: int = 256  # set explicitly: 7B has heads * head_dim (4096) != hidden_size (3072)
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    torch_dtype: str = "bfloat16"  # the dtype checkpoints are stored in

    def __post_init__(self) -> None:
        _validate(self)

    # ---- sizes, computed without allocating -------------------------------------------------
    def layer_parameters(self) -> int:
        h, hd = self.hidden_size, self.head_dim
        attention = h * self.num_attention_heads * hd * 2 + h * self.num_key_value_heads * hd * 2
        mlp = 3 * h * self.intermediate_size
        return attention + mlp + 2 * h  # + input and pre-MLP norms

    def num_parameters(self, embeddings: bool = True) -> int:
        """Exact parameter count (the output head is tied, so it adds nothing)."""
        body = self.num_hidden_layers * self.layer_parameters() + self.hidden_size
        return body + (self.vocab_size * self.hidden_size if embeddings else 0)

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * bytes_per_element

    def replace(self, **changes: Any) -> "GemmaConfig":
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json -------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["GemmaForCausalLM"],
            "model_type": "gemma",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": self.torch_dtype,
        }

    @classmethod
    def from_hf_dict(cls, d: Any, source: str = "config.json") -> "GemmaConfig":
        """Read a transformers GemmaConfig dict (a parsed config.json), checking every value.

        Other architectures, scaled RoPE and values of the wrong type or range are refused with a
        ValueError that starts with `source` and names the key.
        """
        try:
            return cls(**_hf_fields(d))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

# ---- validation: every field's type and range, for presets and config.json alike ----------------

_DTYPES = ("float32", "bfloat16", "float16", "float64")
# Upper bounds far above any Gemma (the 7B has 28 layers, 16 heads, 3072 wide): a hostile
# config.json must not make the loader build a billion layers before the weights are compared.
_SIZE_LIMITS = {"vocab_size": 1 << 24, "hidden_size": 1 << 20, "intermediate_size": 1 << 22,
                "num_hidden_layers": 1024, "num_attention_heads": 1024, "num_key_value_heads": 1024,
                "head_dim": 1 << 16, "max_position_embeddings": 1 << 24}
_TOKEN_IDS = ("pad_token_id", "eos_token_id", "bos_token_id")
_POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta")


def _show(value: Any) -> str:
    """A value for an error message: its repr, cut short (a config value may be any JSON)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(c: GemmaConfig) -> None:
    for name, limit in _SIZE_LIMITS.items():
        value = getattr(c, name)
        if not _is_int(value):
            raise ValueError(f"{name} must be an integer, got {_show(value)}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
        if value > limit:
            raise ValueError(f"{name} must be at most {limit}, got {value}")
    for name in _POSITIVE_NUMBERS:
        value = getattr(c, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
        object.__setattr__(c, name, float(value))  # 10000 in a config.json is 10000.0
    for name in _TOKEN_IDS:
        value = getattr(c, name)
        if not _is_int(value):
            raise ValueError(f"{name} must be a token id (an integer), got {_show(value)}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        if value >= c.vocab_size:
            raise ValueError(f"{name} {value} is outside the vocabulary (vocab_size {c.vocab_size})")
    if c.torch_dtype not in _DTYPES:
        raise ValueError(f"torch_dtype must be one of {', '.join(_DTYPES)}, got {_show(c.torch_dtype)}")
    if c.num_attention_heads % c.num_key_value_heads:
        raise ValueError(f"num_attention_heads ({c.num_attention_heads}) must be a multiple of "
                         f"num_key_value_heads ({c.num_key_value_heads})")
    if c.head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {c.head_dim}")


def _hf_fields(d: Any) -> dict[str, Any]:
    """config.json -> GemmaConfig's fields: architecture checks, defaults and transformers' spellings;
    the values themselves are checked by _validate."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, found a JSON {type(d).__name__}")
    arch = d.get("architectures") or []
    if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
        raise ValueError(f"architectures must be a list of class names, got {_show(arch)}")
    model_type = d.get("model_type")
    if model_type != "gemma" or (arch and arch[0] not in ("GemmaForCausalLM", "GemmaModel")):
        raise ValueError(
            f"unsupported architecture (model_type={_show(model_type)}, architectures={_show(arch)}); "
            "codegemma loads Gemma 1 checkpoints (model_type 'gemma', GemmaForCausalLM) such as "
            "google/codegemma-2b, -7b and -7b-it")
    if d.get("tie_word_embeddings") is False:
        raise ValueError("tie_word_embeddings=false is not Gemma 1; the output head must be tied")
    if d.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true is an encoder variant, not a causal Gemma 1 "
                         "language model")
    # transformers >= 5 writes RoPE settings as rope_parameters={rope_theta, rope_type}; Gemma 1 has
    # plain RoPE, so a scaled variant is refused rather than ignored.
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"rope_parameters must be an object, got {_show(rope)}")
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise ValueError(f"RoPE scaling {_show(kind)} is not supported (Gemma 1 uses plain RoPE)")
    missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
               if k not in d]
    if missing:
        raise ValueError(f"missing required keys {missing}")

    hidden, heads = d["hidden_size"], d["num_attention_heads"]
    head_dim = d.get("head_dim")
    if head_dim is None and _is_int(hidden) and _is_int(heads) and heads > 0:
        if hidden % heads:
            raise ValueError(f"head_dim is missing and hidden_size {hidden} is not divisible by "
                             f"num_attention_heads {heads}")
        head_dim = hidden // heads
    eos = d.get("eos_token_id")
    if isinstance(eos, list):  # several end ids: the first is end of text
        if not eos or not all(_is_int(e) for e in eos):
            raise ValueError(f"eos_token_id must be a token id or a non-empty list of token ids, got {_show(eos)}")
        eos = eos[0]
    elif eos is not None and not _is_int(eos):
        raise ValueError(f"eos_token_id must be a token id or a non-empty list of token ids, got {_show(eos)}")
    dtype = d.get("torch_dtype", d.get("dtype"))
    if isinstance(dtype, str):
        dtype = dtype.removeprefix("torch.")

    def given(key: str, default: Any) -> Any:  # transformers writes null for "use the default"
        value = d.get(key)
        return default if value is None else value

    return dict(
        vocab_size=d.get("vocab_size", 256000),
        hidden_size=hidden,
        intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=given("num_key_value_heads", heads),
        head_dim=head_dim,
        max_position_embeddings=d.get("max_position_embeddings", 8192),
        rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        rope_theta=given("rope_theta", rope.get("rope_theta", 10000.0)),
        pad_token_id=given("pad_token_id", 0),
        eos_token_id=1 if eos is None else eos,
        bos_token_id=given("bos_token_id", 2),
        torch_dtype="bfloat16" if dtype is None else dtype,
    )


PRESETS: dict[str, GemmaConfig] = {
    # Tiny, for CPU tests: GQA (4 query heads over 2 KV heads), a vocabulary the small tokenizer fills.
    "debug": GemmaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=2048, torch_dtype="float32"),
    # codegemma-nano, the built-in model (~18.5M parameters, 37 MB in bf16): 2B's layout (GeGLU 3.3x
    # wide) scaled down, with 3 key/value heads instead of MQA's one: at this size the extra 0.8M
    # parameters buy attention that can copy from far back (FIM's jump to the end of the prefix);
    # an 8192-token vocabulary keeps the tied embedding to a sixth of the weights.
    "nano": GemmaConfig(vocab_size=8192, hidden_size=384, intermediate_size=1280, num_hidden_layers=8,
                        num_attention_heads=6, num_key_value_heads=3, head_dim=64,
                        max_position_embeddings=8192),
    # CodeGemma 2B (and 1.1-2B): Gemma 1 2B, MQA.
    "2b": GemmaConfig(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                      num_attention_heads=8, num_key_value_heads=1, head_dim=256),
    # CodeGemma 7B / 7B-IT: Gemma 1 7B, MHA, head_dim * heads != hidden_size.
    "7b": GemmaConfig(hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=16, head_dim=256),
}


def get_preset(name: str) -> GemmaConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
