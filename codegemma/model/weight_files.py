"""The files of a model directory: where its tensors live, and safetensors headers checked safely.

Everything here reads only headers and index files (never tensor data), so a truncated download
or a corrupt header fails with one `CheckpointError` naming the file before anything is mmapped.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library refuses larger headers too

# safetensors dtype tag -> bytes per element
_SAFE_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                     "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class CheckpointError(ValueError):
    """A checkpoint directory or file cannot be used; the message names the file and the problem."""


def brief_error(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception as one short line (torch.load's messages span paragraphs)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    blocked = [ln for ln in lines if "unsupported GLOBAL" in ln]  # the useful line of a refused pickle
    text = " ".join(blocked or lines) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- reading safetensors headers safely ------------------------------------------------------

def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Validate a .safetensors file without mmapping it; return {name: {dtype, shape, data_offsets}}.

    Checks the header length against the file size, that the header is JSON, and that every
    tensor's byte range lies inside the file, so a truncated download fails here with one message
    instead of crashing inside the mmap.
    """
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes; the 8-byte header "
                              "length is missing); download or save it again")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file (header length {n} "
                                  f"bytes, file size {size} bytes); download or save it again")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc}); "
                              "the file is corrupt, download or save it again") from None
    header.pop("__metadata__", None)
    data_bytes = size - 8 - n
    for name, info in header.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            numel = math.prod(int(d) for d in info["shape"])
            itemsize = _SAFE_DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed safetensors entry for tensor {name!r}: {info!r}") from None
        if end > data_bytes:
            raise CheckpointError(f"{path}: tensor {name!r} ends at data byte {end} but the file holds only "
                                  f"{data_bytes} data bytes (truncated download?); download or save it again")
        if end - begin != numel * itemsize or begin < 0:
            raise CheckpointError(f"{path}: tensor {name!r} has data_offsets {[begin, end]} that do not match "
                                  f"its shape {info['shape']} and dtype {info['dtype']}")
    return header


# ---- locating the weights of a directory -------------------------------------------------------

@dataclass
class WeightSource:
    """Where each checkpoint tensor lives: file -> names (checkpoint spelling) and their shapes."""
    files: dict[Path, list[str]]
    shapes: dict[str, tuple[int, ...]]
    pickled: bool


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise ValueError("weight_map is not an object")
        return weight_map
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a valid index file ({exc}); expected "
                              '{"metadata": {...}, "weight_map": {tensor name: shard file}}') from None


def locate_weights(directory: Path, allow_pickle: bool) -> WeightSource:
    safe_index, safe_single = directory / SAFE_INDEX, directory / SAFE_SINGLE
    if safe_index.exists():
        weight_map = _read_index(safe_index)
        files: dict[Path, list[str]] = {}
        for name, shard in weight_map.items():
            files.setdefault(directory / shard, []).append(name)
        shapes = {}
        for shard, names in files.items():
            if not shard.is_file():
                raise CheckpointError(f"{safe_index}: shard {shard.name} (holding {names[0]!r} and "
                                      f"{len(names) - 1} more tensors) is missing from {directory}")
            header = read_safetensors_header(shard)
            absent = [n for n in names if n not in header]
            if absent:
                raise CheckpointError(f"{shard}: the index says it holds {absent[:3]} but it does not")
            shapes.update({n: tuple(header[n]["shape"]) for n in names})
        return WeightSource(files, shapes, pickled=False)
    singles = [safe_single] if safe_single.exists() else sorted(directory.glob("*.safetensors"))
    if len(singles) == 1:
        header = read_safetensors_header(singles[0])
        return WeightSource({singles[0]: list(header)}, {n: tuple(i["shape"]) for n, i in header.items()}, False)
    if len(singles) > 1:
        raise CheckpointError(f"{directory}: several .safetensors files but no {SAFE_INDEX}; "
                              "add the index file that maps tensor names to shards")

    pickles = [directory / PICKLE_INDEX] if (directory / PICKLE_INDEX).exists() else []
    pickles += [p for p in (directory / PICKLE_SINGLE,) if p.exists()] or sorted(directory.glob("*.pt"))
    if not pickles:
        raise CheckpointError(f"{directory}: no weights found (expected {SAFE_SINGLE} or {SAFE_INDEX} "
                              "with its shards next to config.json)")
    if not allow_pickle:
        raise CheckpointError(f"{pickles[0]}: refusing to unpickle a PyTorch pickle file (it can run code); "
                              "convert it to safetensors, or opt in with allow_pickle=True "
                              "(CLI: --allow-pickle) if you trust its source")
    if pickles[0].name == PICKLE_INDEX:
        files = {}
        for name, shard in _read_index(pickles[0]).items():
            files.setdefault(directory / shard, []).append(name)
        for shard in files:
            if not shard.is_file():
                raise CheckpointError(f"{pickles[0]}: shard {shard.name} is missing from {directory}")
    else:
        files = {pickles[0]: []}  # names are known only after loading
    return WeightSource(files, {}, pickled=True)
