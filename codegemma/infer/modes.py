"""Decode modes: one vocabulary for the CLI (--decode), codegemma.load(decode=) and the Engine.

Kept free of torch so that the CLI can list the choices without importing it.
"""

from __future__ import annotations

# The one vocabulary of decode modes (CLI --decode, codegemma.load(decode=), Engine(decode=)).
DECODE_MODES = ("auto", "eager", "graphs", "compile")


def resolve_decode(mode: str, device) -> str:
    """auto -> CUDA graphs of the eager kernels on GPU (fast from the first request), eager on CPU;
    compile (torch.compile, then graphs: fastest per token, a minute of compiling first) is asked
    for explicitly, as `codegemma serve` does. `device`: a torch.device."""
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {mode!r}; choose one of {', '.join(DECODE_MODES)}")
    if mode == "auto":
        return "graphs" if device.type == "cuda" else "eager"
    if mode != "eager" and device.type != "cuda":
        raise ValueError(f"decode mode {mode!r} needs a CUDA device; use 'eager' or 'auto' on {device.type}")
    return mode
