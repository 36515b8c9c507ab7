"""Hugging Face Gemma directories <-> our `Gemma` module (safetensors + config.json).

The model never sees foreign names: this file maps `model.layers.0...` (HF) to `layers.0...` (ours),
checks every name and shape against the module, and loads tensor by tensor from memory-mapped
safetensors into a module built on the meta device, so peak memory stays ~1x the model.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from codegemma.atomic import atomic_dir, default_file_mode
from codegemma.model.weight_files import (  # noqa: F401  (CheckpointError and the header check are public here)
    FLOAT_DTYPES, MODEL_DIR_LAYOUT, SAFE_INDEX, SAFE_SINGLE, CheckpointError, CheckpointNotFoundError, WeightSource,
    brief_error, locate_weights, quoted, read_json, read_safetensors_header)
from codegemma.tokenizer.files import tokenizer_files

if TYPE_CHECKING:  # torch is imported lazily so `codegemma --help` stays instant
    import torch

    from codegemma.model.config import GemmaConfig
    from codegemma.model.transformer import Gemma

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


# ---- name mapping and checks ---------------------------------------------------------------------

def _our_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _check_names(source: WeightSource, expected: dict[str, tuple[int, ...]], where: Path) -> dict[str, str]:
    """Map our name -> checkpoint name; raise on missing / unexpected / mis-shaped tensors."""
    by_ours: dict[str, str] = {}
    for name in source.shapes:
        if name == "lm_head.weight":
            continue  # tied to the embedding; compared when loading
        ours = _our_name(name)
        if ours in by_ours:
            raise CheckpointError(f"{where}: the checkpoint holds both {quoted(by_ours[ours])} and {quoted(name)}; "
                                  "keep one of them")
        by_ours[ours] = name
    missing = sorted(set(expected) - set(by_ours))
    unexpected = sorted(set(by_ours) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. [{', '.join(map(quoted, unexpected[:3]))}]")
        raise CheckpointError(f"{where}: tensors do not match the Gemma layout in config.json: "
                              f"{'; '.join(parts)}")
    for ours, theirs in by_ours.items():
        found, want = tuple(source.shapes[theirs]), tuple(expected[ours])
        if found == want:
            continue
        is_padded_embedding = ours == "embed_tokens.weight" and found[1:] == want[1:] and found[0] > want[0]
        if not is_padded_embedding:
            raise CheckpointError(f"{_file_of(source, theirs)}: tensor {quoted(theirs)} has shape {list(found)}, "
                                  f"expected {list(want)} from config.json")
    for name, tag in source.dtypes.items():  # every tensor left is one the model (or the tied head) reads
        if tag not in FLOAT_DTYPES:
            raise CheckpointError(f"{_file_of(source, name)}: tensor {quoted(name)} is stored as {tag}; Gemma's "
                                  f"weights are floating-point ({', '.join(FLOAT_DTYPES)}): the file is corrupt "
                                  "or not a Gemma checkpoint")
    return by_ours


def _file_of(source: WeightSource, name: str) -> Path:
    return next((f for f, names in source.files.items() if name in names), next(iter(source.files)))


def resolve_dtype(dtype: "torch.dtype | str | None", device: "torch.device", config: "GemmaConfig") -> "torch.dtype":
    """None -> the checkpoint's torch_dtype on an accelerator, float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    if dtype is None:
        dtype = config.torch_dtype if device.type != "cpu" else "float32"
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else _dtype_name(dtype)
    if name not in ("float32", "bfloat16", "float16", "float64"):
        raise CheckpointError(f"unknown dtype {quoted(str(dtype))}; use float32, bfloat16 or float16")
    return getattr(torch, name)


# ---- loading ------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike) -> "GemmaConfig":
    """The GemmaConfig of a model directory, every value checked; the first thing every command
    that loads a model calls, so a folder that is not a model is told so before anything else."""
    from codegemma.model.config import GemmaConfig

    directory = Path(path)
    if not directory.is_dir():
        if directory.exists():
            raise CheckpointError(f"{directory}: not a directory; {MODEL_DIR_LAYOUT}")
        raise CheckpointNotFoundError(f"{directory}: model directory not found; {MODEL_DIR_LAYOUT}")
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise CheckpointNotFoundError(f"{directory}: config.json: missing; {MODEL_DIR_LAYOUT}")
    raw = read_json(cfg_path)
    try:
        return GemmaConfig.from_hf_dict(raw, source=str(cfg_path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def load_model(path: str | os.PathLike, device: "str | torch.device | None" = None,
               dtype: "torch.dtype | str | None" = None, allow_pickle: bool = False,
               allow_nonfinite: bool = False, prepare=None) -> "tuple[Gemma, GemmaConfig]":
    """Load a Hugging Face Gemma directory (codegemma-2b / -7b / -7b-it, 1.1 releases, our own saves).

    device: default cuda if available, else cpu. dtype: default the checkpoint's torch_dtype on
    CUDA and float32 on CPU. Weights holding NaN or Inf are refused unless allow_nonfinite=True
    (then loaded with a warning). Returns (model in eval mode, config).

    prepare: optional `prepare(model) -> hook`, called with the model still on the meta device;
    `hook(name, tensor) -> {name: tensor}` then receives each weight as it is read (on `device`, in
    `dtype`, after the checks) and returns the state-dict entries to load in its place, possibly
    after swapping the module that owns it (codegemma.infer.quantize.quantizer quantizes each
    weight this way, so a quantized model never exists at full precision in memory).
    """
    import torch

    from codegemma.device import resolve_device
    from codegemma.model.transformer import Gemma

    directory = Path(path)
    config = load_config(directory)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, config)
    source = locate_weights(directory, allow_pickle)

    with torch.device("meta"):
        model = Gemma(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    step = TensorStep(device, dtype, allow_nonfinite, prepare(model) if prepare is not None else None)
    state = (_load_pickled(source, expected, directory, step) if source.pickled
             else _load_safetensors(source, expected, directory, config, step))
    step.finish()
    model.load_state_dict(state, strict=True, assign=True)
    _check_materialized(model)
    return model.eval(), config


class TensorStep:
    """The one step every checkpoint tensor takes into the model, as it is read: to the device and
    dtype (so no second copy of the model exists), then checked there for NaN/Inf in one pass.
    Anything else done per tensor while loading (e.g. quantizing) belongs in __call__."""

    def __init__(self, device: "torch.device", dtype: "torch.dtype", allow_nonfinite: bool, hook=None):
        self.device, self.dtype, self.allow_nonfinite = device, dtype, allow_nonfinite
        self.nonfinite: list[str] = []  # problems accepted under allow_nonfinite, warned about at the end
        self.hook = hook  # load_model's prepare(model): (our name, placed tensor) -> state-dict entries

    def entries(self, ours: str, placed: "torch.Tensor") -> "dict[str, torch.Tensor]":
        """What goes into the state dict for a placed tensor: itself, or what the hook makes of it."""
        return {ours: placed} if self.hook is None else self.hook(ours, placed)

    def __call__(self, tensor: "torch.Tensor", name: str, file: Path) -> "torch.Tensor":
        placed = tensor.to(device=self.device, dtype=self.dtype)
        if not _all_finite(placed):
            self._nonfinite(tensor, placed, name, file)
        return placed

    def _nonfinite(self, stored: "torch.Tensor", placed: "torch.Tensor", name: str, file: Path) -> None:
        import torch

        count = int((~torch.isfinite(placed)).sum())
        problem = f"{file}: tensor {quoted(name)} has {count} non-finite (NaN or Inf) value{'s' * (count > 1)}"
        if stored.dtype != placed.dtype and _all_finite(stored):
            problem += (f" as {_dtype_name(placed.dtype)} (finite as stored in {_dtype_name(stored.dtype)}: its "
                        f"values exceed {_dtype_name(placed.dtype)}'s range; load it in another dtype)")
        if not self.allow_nonfinite:
            raise CheckpointError(f"{problem}; the weights are corrupt or diverged. To load them anyway pass "
                                  "allow_nonfinite=True (CLI: --allow-nonfinite)")
        self.nonfinite.append(problem)

    def finish(self) -> None:
        if self.nonfinite:
            more = f" (and {len(self.nonfinite) - 1} more tensors)" if len(self.nonfinite) > 1 else ""
            warnings.warn(f"{self.nonfinite[0]}{more}; loaded anyway (allow_nonfinite)", stacklevel=3)


def _all_finite(t: "torch.Tensor") -> bool:
    """One reduction over the tensor where it lives; NaN propagates through min/max, Inf shows in them."""
    import torch

    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _load_safetensors(source: WeightSource, expected: dict, directory: Path, config: "GemmaConfig",
                      step: TensorStep) -> dict:
    from safetensors import SafetensorError, safe_open

    by_ours = _check_names(source, expected, directory)
    theirs_to_ours = {v: k for k, v in by_ours.items()}
    state: dict[str, torch.Tensor] = {}
    lm_head_file = next((file for file, names in source.files.items() if "lm_head.weight" in names), None)
    for file, names in source.files.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in names:
                    if name == "lm_head.weight":
                        continue
                    ours = theirs_to_ours[name]
                    if ours == "embed_tokens.weight" and source.shapes[name][0] > config.vocab_size:
                        warnings.warn(f"{file}: embedding has {source.shapes[name][0]} rows (JAX-style padding); "
                                      f"keeping the first vocab_size={config.vocab_size}", stacklevel=3)
                        tensor = f.get_slice(name)[: config.vocab_size]
                    else:
                        tensor = f.get_tensor(name)
                    placed = step(tensor, name, file)
                    if ours == "embed_tokens.weight" and lm_head_file is not None:
                        _check_tied_head(lm_head_file, placed)  # before a hook changes the embedding
                    state.update(step.entries(ours, placed))
                    del tensor, placed  # a hook that quantized it: the full-precision tensor goes now
        except (OSError, SafetensorError) as exc:  # corrupt data the header check could not see
            raise CheckpointError(f"{file}: cannot read safetensors data ({brief_error(exc)})") from None
    return state


def _check_tied_head(file: Path, embedding: "torch.Tensor", rows_per_chunk: int = 8192) -> None:
    """An lm_head.weight may be stored; Gemma ties it, so it must equal the embedding (compared in chunks)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(file), framework="pt", device="cpu") as f:
        head = f.get_slice("lm_head.weight")
        rows = head.get_shape()[0]
        same = rows >= embedding.shape[0]
        for start in range(0, embedding.shape[0], rows_per_chunk):
            if not same:
                break
            stop = min(start + rows_per_chunk, embedding.shape[0])
            same = torch.equal(head[start:stop].to(embedding.device, embedding.dtype), embedding[start:stop])
    if not same:
        raise CheckpointError(f"{file}: lm_head.weight differs from model.embed_tokens.weight; Gemma ties "
                              "them, so this is not a Gemma 1 checkpoint (or it is corrupt)")


def _torch_load(file: Path):
    import torch

    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # torch raises many types for bad pickles; report the file once
        raise CheckpointError(f"{file}: cannot load PyTorch weights ({brief_error(exc)})") from None


_TORCH_TAGS = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def _load_pickled(source: WeightSource, expected: dict, directory: Path, step: TensorStep) -> dict:
    import torch

    raw: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file in source.files:
        part = _torch_load(file)
        if isinstance(part, dict) and isinstance(part.get("state_dict"), dict):
            part = part["state_dict"]
        if not isinstance(part, dict):
            raise CheckpointError(f"{file}: expected a dict of tensors, found {type(part).__name__}")
        for name, value in part.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{file}: {quoted(str(name))} is not a tensor; expected a dict of tensors")
            raw[name], origin[name] = value, file
    files: dict[Path, list[str]] = {}
    for name, file in origin.items():
        files.setdefault(file, []).append(name)
    dtypes = {k: _TORCH_TAGS.get(_dtype_name(v.dtype), _dtype_name(v.dtype)) for k, v in raw.items()}
    source = WeightSource(files, {k: tuple(v.shape) for k, v in raw.items()}, True, dtypes)
    by_ours = _check_names(source, expected, directory)
    rows = expected["embed_tokens.weight"][0]
    emb = raw[by_ours["embed_tokens.weight"]][:rows]  # JAX-style padded rows dropped
    if "lm_head.weight" in raw and not torch.equal(raw["lm_head.weight"][:rows], emb):
        raise CheckpointError(f"{directory}: lm_head.weight differs from the embedding; Gemma ties them")
    state = {}
    for ours, theirs in by_ours.items():
        tensor = emb if ours == "embed_tokens.weight" else raw.pop(theirs)
        state.update(step.entries(ours, step(tensor, theirs, origin[theirs])))
    return state


def _check_materialized(model: "Gemma") -> None:
    """Gemma computes RoPE on the fly and has no buffers; if one is added, it must not stay on meta."""
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"internal: {left[:3]} still on the meta device after loading; "
                           "checkpoint.load_model must rebuild such buffers")


# ---- saving -------------------------------------------------------------------------------------

def _dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).replace("torch.", "")


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses tensors that share a buffer (e.g. the engine's fused q/k/v views): copy
    such a view, leave ordinary tensors alone."""
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def save_model(model: "Gemma", config: "GemmaConfig", out_dir: str | os.PathLike,
               dtype: "torch.dtype | str | None" = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
               tokenizer_dir: str | os.PathLike | None = None, generation_config: dict | None = None,
               force: bool = False) -> Path:
    """Write a Hugging Face Gemma directory that transformers and `load_model` both read.

    config.json + generation_config.json, model.safetensors (or model-0000k-of-0000N.safetensors +
    model.safetensors.index.json when larger than max_shard_bytes), names with the `model.` prefix,
    no lm_head (tied). dtype: default the model's own. Tokenizer files are copied from tokenizer_dir.
    Atomic (codegemma.atomic.atomic_dir): an existing out_dir is replaced only if it is empty or a
    model directory (has config.json), or with force=True, and only once the new one is complete.
    """
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory; choose another output path")
    if out.exists() and not force and any(out.iterdir()) and not (out / "config.json").exists():
        raise CheckpointError(f"{out}: exists and is not a model directory; refusing to replace it "
                              "(choose a new or empty directory)")
    if max_shard_bytes <= 0:
        raise CheckpointError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    tokenizer = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
    if tokenizer_dir is not None and not tokenizer:
        raise CheckpointError(f"{tokenizer_dir}: no tokenizer files to copy (tokenizer.json or tokenizer.model)")
    state = model.state_dict()
    target = resolve_dtype(dtype, torch.device("cpu"), config) if dtype is not None else \
        next(v.dtype for v in state.values() if v.is_floating_point())
    config = config.replace(torch_dtype=_dtype_name(target))
    shards = _plan_shards(state, target, max_shard_bytes)

    with atomic_dir(out, replace=True) as tmp:
        total = 0
        weight_map: dict[str, str] = {}
        for k, names in enumerate(shards):
            fname = SAFE_SINGLE if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            # Converted one shard at a time so a GPU model never needs a full CPU copy at once.
            tensors = {f"model.{n}": _own_storage(state[n].detach().to("cpu", target).contiguous())
                       for n in names}
            save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            weight_map.update({name: fname for name in tensors})
            del tensors
        if len(shards) > 1:
            _write_json(tmp / SAFE_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
        _write_json(tmp / "config.json", config.to_hf_dict())
        gen = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
               "pad_token_id": config.pad_token_id}
        _write_json(tmp / "generation_config.json", {**gen, **(generation_config or {})})
        for f in tokenizer:
            shutil.copyfile(f, tmp / f.name)
        for f in tmp.iterdir():
            os.chmod(f, default_file_mode())  # safetensors writes 0600; a checkpoint is meant to be shared
    return out


def _plan_shards(state: dict, dtype: "torch.dtype", max_shard_bytes: int) -> list[list[str]]:
    """Greedy shards in state-dict order; a tensor larger than the limit gets a shard of its own."""
    itemsize = dtype.itemsize
    shards: list[list[str]] = [[]]
    used = 0
    for name, t in state.items():
        nbytes = t.numel() * (itemsize if t.is_floating_point() else t.element_size())
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
