"""The Gemma 1 decoder, exactly as transformers' GemmaForCausalLM computes it.

Parameter names match the Hugging Face checkpoint with the leading `model.` removed, so the
checkpoint code maps names one to one. The model never builds a cache; it uses one it is given.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from codegemma.model.attention import Attention
from codegemma.model.cache import KVCache
from codegemma.model.config import GemmaConfig
from codegemma.model.layers import GeGLU, RMSNorm, rope_cos_sin


@functools.lru_cache(maxsize=None)
def _normalizer(hidden_size: int, dtype: torch.dtype) -> float:
    """sqrt(hidden_size) rounded to `dtype`, as a Python float."""
    return torch.tensor(math.sqrt(hidden_size), dtype=dtype, device="cpu").item()


class DecoderLayer(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)  # the pre-MLP norm
        self.mlp = GeGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x, cos, sin, positions, cache=None, attn_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, cache, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Gemma(nn.Module):
    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # sqrt(hidden) rounded to each activation dtype, precomputed so torch.compile sees constants.
        self._normalizers = {dt: _normalizer(config.hidden_size, dt)
                             for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64)}

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V]. `positions` [B, T] drive RoPE (default 0..T-1);
        `cache` is written and read (see Attention.forward); `attn_mask` replaces the causal mask."""
        return self.logits(self.hidden_states(tokens, positions, cache, attn_mask))

    def hidden_states(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                      cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final normed hidden states [B, T, H]: what the output head reads. Callers that need
        logits for a few positions only (a prompt's last token; a chunked training loss) use this."""
        b, t = tokens.shape
        if positions is None:
            positions = torch.arange(t, device=tokens.device).expand(b, t)
        x = self.embed_tokens(tokens)  # [B, T, H]
        # The normaliser is rounded to the activation dtype first (45.25 for 2048 in bf16). A Python
        # float (not a device tensor built here) keeps forward free of host->device copies, so the
        # decode step can be captured in a CUDA graph; the product is the same.
        x = x * self._normalizers[x.dtype]
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, positions, cache, attn_mask)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed_tokens.weight)  # tied output head, no soft-capping

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = 0.02) -> "Gemma":
        """Random weights like transformers' init (normal(0, std)); norm offsets small but non-zero
        so that a random model exercises the (1 + w) path."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            scale = std if not name.endswith("layernorm.weight") and name != "norm.weight" else 0.1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale)
        return self
