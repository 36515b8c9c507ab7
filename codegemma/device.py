"""The one place a device name (`--device`, `device=`) becomes a torch.device.

Every command and `codegemma.load` pass their device through `resolve_device`, so a device this
machine does not have (`cuda` on a CPU-only PyTorch, `cuda:7` on a two-GPU host, `mps` off a Mac)
or a name PyTorch does not know (`gpu`, `tpu`) ends in one line that says what is available,
before any weights are read, instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import re

import torch

_NAME = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")
# Names people type for "the accelerator" that PyTorch spells differently.
_ALIASES = {"gpu": "cuda", "nvidia": "cuda", "cuda0": "cuda:0", "metal": "mps", "apple": "mps"}


def available_devices() -> list[str]:
    """What this machine and this PyTorch build can run on, e.g. ['cpu'] or ['cpu', 'cuda:0', 'cuda:1']."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def default_device() -> torch.device:
    """cuda when a CUDA device is visible, else cpu (MPS only when asked for)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: "str | torch.device | None") -> torch.device:
    """None or "auto" -> the default device; a name this machine has -> its torch.device.

    Raises ValueError with one line naming the device, what this machine offers and the fix.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device is None or device == "auto":
        return default_device()
    name = str(device).strip().lower()
    match = _NAME.fullmatch(name)
    have = ", ".join(available_devices())
    if match is None:
        hint = f" (did you mean {_ALIASES[name]}?)" if name in _ALIASES else ""
        raise ValueError(f"device {device!r} is not a device name{hint}; use cpu, cuda, cuda:N or mps "
                         f"(this machine has: {have})")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"device {device!r}: this PyTorch ({torch.__version__}) is a CPU-only build; "
                             "use cpu (--device cpu), or install a CUDA build of PyTorch")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: no CUDA device is visible (check nvidia-smi and "
                             "CUDA_VISIBLE_DEVICES); use cpu (--device cpu)")
        if index is not None and int(index) >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device"
                             f"{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1}); pick one of those")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: Apple's MPS is not available on this machine; "
                         f"use one of: {have}")
    if kind == "cpu" and index not in (None, "0"):
        raise ValueError(f"device {device!r}: there is one cpu device; use cpu (--device cpu)")
    return torch.device(name)
