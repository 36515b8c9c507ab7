"""LoRA applied from outside the model: swap chosen Linear layers for a frozen base + low-rank update.

y = base(x) + scale * B(A(dropout(x))), A [r, in] random, B [out, r] zero (so step 0 is the base
model). Only A and B train. `merged_state_dict` folds W + scale * B @ A back into plain names, so
the export is an ordinary Gemma checkpoint; `save_adapter` writes the adapter alone in the PEFT
layout (adapter_model.safetensors + adapter_config.json).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from codegemma.atomic import atomic_dir, default_file_mode


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.scale = scale
        self.lora_a = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device,
                                dtype=base.weight.dtype)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device,
                                dtype=base.weight.dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self, generator: torch.Generator | None = None) -> None:
        # Kaiming-uniform A (as PEFT does) and zero B.
        bound = 1.0 / math.sqrt(self.base.in_features)
        a = torch.rand(self.lora_a.weight.shape, generator=generator) * 2 * bound - bound
        self.lora_a.weight.copy_(a)
        self.lora_b.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(self.dropout(x))) * self.scale

    def merged_weight(self) -> torch.Tensor:
        w = self.base.weight.float() + self.scale * (self.lora_b.weight.float() @ self.lora_a.weight.float())
        return w.to(self.base.weight.dtype)


def apply_lora(model: nn.Module, rank: int, scale: float, targets: tuple[str, ...],
               dropout: float = 0.0, seed: int = 0) -> list[str]:
    """Freeze every parameter, then wrap the Linear layers whose name is in `targets`.

    Returns the wrapped module names. Deterministic: A is drawn from a generator seeded by `seed`.
    """
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                lora = LoRALinear(child, rank, scale, dropout)
                lora.reset_adapter(gen)
                setattr(module, child_name, lora)
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"LoRA targets {list(targets)} matched no Linear layer; use names like q_proj, v_proj")
    return wrapped


def clean_name(name: str) -> str:
    """Drop the wrapper names that activation checkpointing and torch.compile insert."""
    for junk in ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module."):
        name = name.replace(junk, "")
    return name


def merged_state_dict(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A full (unsharded, clean-named) state dict with LoRA parts -> plain Gemma names.

    `x.base.weight`, `x.lora_a.weight`, `x.lora_b.weight` become `x.weight = W + scale * B @ A`.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        name = clean_name(name)
        if ".lora_a." in name or ".lora_b." in name:
            continue
        if name.endswith(".base.weight"):
            stem = name[: -len(".base.weight")]
            a, b = state_lookup(state, stem + ".lora_a.weight"), state_lookup(state, stem + ".lora_b.weight")
            t = (t.float() + scale * (b.float() @ a.float())).to(t.dtype)
            name = stem + ".weight"
        out[name] = t
    return out


def state_lookup(state: dict[str, torch.Tensor], clean: str) -> torch.Tensor:
    for name, t in state.items():
        if clean_name(name) == clean:
            return t
    raise KeyError(clean)


def adapter_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT names: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight."""
    out = {}
    for name, t in state.items():
        name = clean_name(name)
        if ".lora_a." in name or ".lora_b." in name:
            peft = name.replace(".lora_a.", ".lora_A.").replace(".lora_b.", ".lora_B.")
            out[f"base_model.model.model.{peft}"] = t.detach().to("cpu").contiguous()
    return out


def save_adapter(state: dict[str, torch.Tensor], out_dir: str | Path, rank: int, alpha: float,
                 targets: tuple[str, ...], dropout: float, base: str | None) -> Path:
    """Write the adapter (PEFT layout) atomically (codegemma.atomic.atomic_dir, replacing out_dir)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
              "lora_dropout": dropout, "target_modules": list(targets), "bias": "none",
              "base_model_name_or_path": base, "fan_in_fan_out": False}
    with atomic_dir(out, replace=True) as tmp:
        save_file(adapter_state_dict(state), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        os.chmod(tmp / "adapter_model.safetensors", default_file_mode())  # safetensors writes 0600
    return out
