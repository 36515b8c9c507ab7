"""Gemma 1 model shapes as data: the presets and the Hugging Face config.json mapping.

No torch here: a config can be built, counted and compared without allocating anything.
"""

from __future__ import annotations

import dataclasses
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
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GemmaConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

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
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "GemmaConfig":
        """Read a transformers GemmaConfig dict; refuse other architectures with a clear message."""
        arch = d.get("architectures") or []
        model_type = d.get("model_type")
        if model_type != "gemma" or (arch and arch[0] not in ("GemmaForCausalLM", "GemmaModel")):
            raise ValueError(
                f"{source}: unsupported architecture (model_type={model_type!r}, architectures={arch}); "
                "codegemma loads Gemma 1 checkpoints (model_type 'gemma', GemmaForCausalLM) such as "
                "google/codegemma-2b, -7b and -7b-it")
        if d.get("tie_word_embeddings") is False:
            raise ValueError(f"{source}: tie_word_embeddings=false is not Gemma 1; the output head must be tied")
        required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: missing required keys {missing}")
        heads = d["num_attention_heads"]
        eos = d.get("eos_token_id", 1)
        if isinstance(eos, list):
            eos = eos[0]
        return cls(
            vocab_size=d.get("vocab_size", 256000),
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            max_position_embeddings=d.get("max_position_embeddings", 8192),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=d.get("rope_theta", 10000.0),
            pad_token_id=d.get("pad_token_id", 0) if d.get("pad_token_id") is not None else 0,
            eos_token_id=eos if eos is not None else 1,
            bos_token_id=d.get("bos_token_id", 2) if d.get("bos_token_id") is not None else 2,
            torch_dtype=str(d.get("torch_dtype") or d.get("dtype") or "bfloat16").replace("torch.", ""),
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
