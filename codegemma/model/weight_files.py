"""The files of a model directory: where its tensors live, and its JSON and safetensors headers
read safely.

Everything here reads only config/index files and safetensors headers (never tensor data), so a
truncated download, a corrupt header or a hostile index fails with one `CheckpointError` naming
the file before anything is memory-mapped. No message quotes the bytes of a file: a file that is
not what it claims to be may be anything (an index may name /etc/passwd), so messages say what is
wrong and where, never what was found.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library refuses larger headers too
MAX_JSON_BYTES = 64 * 2**20  # config and index files are kilobytes; this only stops a runaway read
MODEL_DIR_LAYOUT = ("a model directory holds config.json, the weights (model.safetensors, or "
                    "model-0000k-of-0000N.safetensors shards with model.safetensors.index.json) and the "
                    "tokenizer (tokenizer.json or tokenizer.model), as a Hugging Face download or "
                    "`codegemma init` has them")

# safetensors dtype tag -> bytes per element
_SAFE_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                     "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
# Gemma's weights are floating point; 8-bit floats would need scales this format does not carry.
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


class CheckpointError(ValueError):
    """A checkpoint directory or file cannot be used; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The model directory or its config.json does not exist (also a FileNotFoundError)."""


def brief_error(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception as one short line (torch.load's messages span paragraphs)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    blocked = [ln for ln in lines if "unsupported GLOBAL" in ln]  # the useful line of a refused pickle
    text = " ".join(blocked or lines) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(name: str, limit: int = 80) -> str:
    """A name taken from a file (tensor, shard), quoted on one line and cut short."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# ---- JSON files and headers ----------------------------------------------------------------

def require_file(path: Path) -> int:
    """The size of `path`, which must be a readable regular file."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a regular file")
    return size


def parse_json(raw: bytes, path: Path, what: str | None = None, object_pairs_hook=None) -> Any:
    """Decode JSON bytes (of `path`, or of its part `what`); errors say where and what kind of
    problem, never the text itself."""
    subject = f"{path}: {what} is" if what else f"{path}:"
    advice = "; the file is corrupt, download or save it again" if what else ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{subject} not valid JSON (not valid UTF-8 at byte {exc.start}){advice}") from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:  # Python's decoder recurses once per level of nesting
        raise CheckpointError(f"{subject} {'nested' if what else 'JSON nested'} too deeply{advice}") from None
    except json.JSONDecodeError as exc:  # exc.msg names the problem ("Expecting value"), not the text
        raise CheckpointError(f"{subject} not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                              f"{advice}") from None


def read_json(path: Path) -> Any:
    """A small JSON file (config.json, an index), read with the checks of `parse_json`."""
    if require_file(path) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB, too large for a JSON "
                              "file of a model directory")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    return parse_json(raw, path)


def read_json_object(path: Path) -> dict:
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found a JSON {type(obj).__name__}")
    return obj


class _Pairs(list):
    """A JSON object kept as its (key, value) pairs, so repeated keys can be seen."""


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Validate a .safetensors file without mmapping it; return {name: {dtype, shape, data_offsets}}.

    Checks the header length against the file size, that the header is a flat JSON object with
    one well-formed entry per tensor, and that the tensors' byte ranges lie inside the file and
    cover its data exactly once (no overlap, no gap), so a truncated download or a forged header
    fails here with one message instead of inside the mmap.
    """
    size = require_file(path)
    if size < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes; the 8-byte header "
                              "length is missing); download or save it again")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        # The length is the file's first 8 bytes: quoting it would quote the file, so it is not.
        if 8 + n > size:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file: its header length is "
                                  f"larger than the file ({size} bytes); download or save it again")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: corrupt safetensors file: its header length is above the "
                                  f"{MAX_HEADER_BYTES >> 20} MiB limit")
        raw = f.read(n)
    pairs = parse_json(raw, path, "safetensors header", object_pairs_hook=_Pairs)
    if not isinstance(pairs, _Pairs):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object; the file is corrupt, "
                              "download or save it again")
    header: dict[str, dict[str, Any]] = {}
    for name, info in pairs:
        if name in header:
            raise CheckpointError(f"{path}: tensor {quoted(name)} appears twice in the header; the file is corrupt")
        if name != "__metadata__":
            header[name] = _header_entry(path, name, info)
    _check_ranges(path, header, size - 8 - n)
    return header


def _header_entry(path: Path, name: str, info: Any) -> dict[str, Any]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed safetensors header: tensor {quoted(name)} has {what}; "
                               "the file is corrupt, download or save it again")

    if not isinstance(info, _Pairs):
        raise bad("an entry that is not an object")
    entry = dict(info)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _SAFE_DTYPE_BYTES:
        raise bad("no valid dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad("no valid shape (a list of sizes)")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]):
        raise bad("no valid data_offsets (begin and end)")
    if offsets[1] - offsets[0] != math.prod(shape) * _SAFE_DTYPE_BYTES[dtype]:
        raise bad(f"data_offsets {offsets} that do not match its shape {shape} and dtype {dtype}")
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def _check_ranges(path: Path, header: dict[str, dict[str, Any]], data_bytes: int) -> None:
    """Every data byte belongs to exactly one tensor (the safetensors format; its library agrees)."""
    for name, info in header.items():
        end = info["data_offsets"][1]
        if end > data_bytes:
            raise CheckpointError(f"{path}: tensor {quoted(name)} ends at data byte {end} but the file holds "
                                  f"only {data_bytes} data bytes (truncated download?); download or save it again")
    pos, previous = 0, None
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, end = info["data_offsets"]
        if begin < pos:
            raise CheckpointError(f"{path}: tensors {quoted(previous)} and {quoted(name)} overlap in the data "
                                  "(a forged or corrupt header)")
        if begin > pos:
            raise CheckpointError(f"{path}: bytes {pos}..{begin} of the data belong to no tensor "
                                  "(a forged or corrupt header)")
        pos, previous = end, name
    if pos < data_bytes:
        raise CheckpointError(f"{path}: bytes {pos}..{data_bytes} of the data belong to no tensor "
                              "(a forged or corrupt header)")


# ---- locating the weights of a directory -------------------------------------------------------

@dataclass
class WeightSource:
    """Where each checkpoint tensor lives: file -> names (checkpoint spelling), their shapes and
    safetensors dtype tags (empty for pickles until they are loaded)."""
    files: dict[Path, list[str]]
    shapes: dict[str, tuple[int, ...]]
    pickled: bool
    dtypes: dict[str, str] = field(default_factory=dict)


def _read_index(index: Path, directory: Path) -> dict[Path, list[str]]:
    """shard file -> the tensor names an index file puts there; every shard stays inside `directory`."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: not a valid index file (weight_map is not an object); expected "
                              '{"metadata": {...}, "weight_map": {tensor name: shard file}}')
    files: dict[Path, list[str]] = {}
    for name, shard in weight_map.items():
        files.setdefault(_shard_path(index, directory, name, shard), []).append(name)
    return files


def _shard_path(index: Path, directory: Path, name: str, shard: Any) -> Path:
    """A shard named by an index: a relative path that cannot leave the model directory. Checked
    by its spelling, not by resolving it, so the Hugging Face cache's symlinked files still load."""
    if not isinstance(shard, str):
        raise CheckpointError(f"{index}: weight_map entry for {quoted(name)} is not a file name")
    parts = PurePosixPath(shard).parts
    if not shard or "\\" in shard or PurePosixPath(shard).is_absolute() or ".." in parts or not parts:
        raise CheckpointError(f"{index}: shard {quoted(shard)} (for {quoted(name)}) must be a file name inside "
                              "the model directory; the index is corrupt or hostile")
    return directory.joinpath(*parts)


def locate_weights(directory: Path, allow_pickle: bool) -> WeightSource:
    safe_index, safe_single = directory / SAFE_INDEX, directory / SAFE_SINGLE
    if safe_index.exists():
        files = _read_index(safe_index, directory)
        shapes, dtypes = {}, {}
        for shard, names in files.items():
            if not shard.exists():
                raise CheckpointError(f"{safe_index}: shard {shard.relative_to(directory)} (holding "
                                      f"{quoted(names[0])} and {len(names) - 1} more tensors) is missing "
                                      f"from {directory}")
            header = read_safetensors_header(shard)
            absent = [n for n in names if n not in header]
            if absent:
                raise CheckpointError(f"{shard}: the index says it holds {quoted(absent[0])} "
                                      f"(and {len(absent) - 1} more) but it does not")
            shapes.update({n: tuple(header[n]["shape"]) for n in names})
            dtypes.update({n: header[n]["dtype"] for n in names})
        return WeightSource(files, shapes, False, dtypes)
    singles = [safe_single] if safe_single.exists() else sorted(directory.glob("*.safetensors"))
    if len(singles) == 1:
        header = read_safetensors_header(singles[0])
        return WeightSource({singles[0]: list(header)}, {n: tuple(i["shape"]) for n, i in header.items()},
                            False, {n: i["dtype"] for n, i in header.items()})
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
        files = _read_index(pickles[0], directory)
        for shard in files:
            if not shard.is_file():
                raise CheckpointError(f"{pickles[0]}: shard {shard.relative_to(directory)} is missing "
                                      f"from {directory}")
    else:
        files = {pickles[0]: []}  # names are known only after loading
    return WeightSource(files, {}, pickled=True)
