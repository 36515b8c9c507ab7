"""Hugging Face Gemma directories <-> our `Gemma` module (safetensors + config.json).

The model never sees foreign names: this file maps `model.layers.0...` (HF) to `layers.0...` (ours),
checks every name and shape against the module, and loads tensor by tensor from memory-mapped
safetensors into a module built on the meta device, so peak memory stays ~1x the model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from codegemma.model.weight_files import (  # noqa: F401  (CheckpointError and the header check are public here)
    SAFE_INDEX, SAFE_SINGLE, CheckpointError, WeightSource, brief_error, locate_weights, read_safetensors_header)

if TYPE_CHECKING:  # torch is imported lazily so `codegemma --help` stays instant
    import torch

    from codegemma.model.config import GemmaConfig
    from codegemma.model.transformer import Gemma

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


# ---- name mapping and checks ---------------------------------------------------------------------

def _our_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _check_names(source: WeightSource, expected: dict[str, tuple[int, ...]], where: Path) -> dict[str, str]:
    """Map our name -> checkpoint name; raise on missing / unexpected / mis-shaped tensors."""
    by_ours = {}
    for name in source.shapes:
        if name == "lm_head.weight":
            continue  # tied to the embedding; compared when loading
        by_ours[_our_name(name)] = name
    missing = sorted(set(expected) - set(by_ours))
    unexpected = sorted(set(by_ours) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{where}: tensors do not match the Gemma layout in config.json: "
                              f"{'; '.join(parts)}")
    for ours, theirs in by_ours.items():
        found, want = tuple(source.shapes[theirs]), tuple(expected[ours])
        if found == want:
            continue
        is_padded_embedding = ours == "embed_tokens.weight" and found[1:] == want[1:] and found[0] > want[0]
        if not is_padded_embedding:
            raise CheckpointError(f"{_file_of(source, theirs)}: tensor {theirs!r} has shape {list(found)}, "
                                  f"expected {list(want)} from config.json")
    return by_ours


def _file_of(source: WeightSource, name: str) -> Path:
    return next((f for f, names in source.files.items() if name in names), next(iter(source.files)))


def resolve_dtype(dtype: "torch.dtype | str | None", device: "torch.device", config: "GemmaConfig") -> "torch.dtype":
    """None -> the checkpoint's torch_dtype on an accelerator, float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    if dtype is None:
        dtype = config.torch_dtype if device.type != "cpu" else "float32"
    if isinstance(dtype, str):
        dt = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype):
            raise CheckpointError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = dt
    return dtype


# ---- loading ------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike) -> "GemmaConfig":
    from codegemma.model.config import GemmaConfig

    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found (expected a Hugging Face "
                              "directory with config.json and model.safetensors)")
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; a model directory needs config.json next to its weights")
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({brief_error(exc)})") from None
    if isinstance(raw, dict):
        raw = _normalize_hf_config(raw, cfg_path)
    try:
        return GemmaConfig.from_hf_dict(raw, source=str(cfg_path))
    except CheckpointError:
        raise
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        raise CheckpointError(msg if str(cfg_path) in msg else f"{cfg_path}: {msg}") from None


def _normalize_hf_config(raw: dict, cfg_path: Path) -> dict:
    """transformers >= 5 writes RoPE settings as rope_parameters={rope_theta, rope_type}; Gemma 1
    has plain RoPE, so a scaled variant or bidirectional attention is refused rather than ignored."""
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if isinstance(rope, dict):
        kind = rope.get("rope_type") or rope.get("type") or "default"
        if kind != "default":
            raise CheckpointError(f"{cfg_path}: RoPE scaling {kind!r} is not supported (Gemma 1 uses plain RoPE)")
        if "rope_theta" not in raw and "rope_theta" in rope:
            raw = {**raw, "rope_theta": rope["rope_theta"]}
    if raw.get("use_bidirectional_attention"):
        raise CheckpointError(f"{cfg_path}: use_bidirectional_attention=true is an encoder variant, "
                              "not a causal Gemma 1 language model")
    return raw


def load_model(path: str | os.PathLike, device: "str | torch.device | None" = None,
               dtype: "torch.dtype | str | None" = None, allow_pickle: bool = False) -> "tuple[Gemma, GemmaConfig]":
    """Load a Hugging Face Gemma directory (codegemma-2b / -7b / -7b-it, 1.1 releases, our own saves).

    device: default cuda if available, else cpu. dtype: default the checkpoint's torch_dtype on
    CUDA and float32 on CPU. Returns (model in eval mode, config).
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

    def convert(t: torch.Tensor) -> torch.Tensor:  # applied as each tensor is read: no second copy
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    state = (_load_pickled(source, expected, directory, convert) if source.pickled
             else _load_safetensors(source, expected, directory, config, convert))
    model.load_state_dict(state, strict=True, assign=True)
    _check_materialized(model)
    return model.eval(), config


def _load_safetensors(source: WeightSource, expected: dict, directory: Path, config: "GemmaConfig", convert) -> dict:
    from safetensors import SafetensorError, safe_open

    by_ours = _check_names(source, expected, directory)
    theirs_to_ours = {v: k for k, v in by_ours.items()}
    state: dict[str, torch.Tensor] = {}
    lm_head_file = None
    for file, names in source.files.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in names:
                    if name == "lm_head.weight":
                        lm_head_file = file
                        continue
                    ours = theirs_to_ours[name]
                    if ours == "embed_tokens.weight" and source.shapes[name][0] > config.vocab_size:
                        warnings.warn(f"{file}: embedding has {source.shapes[name][0]} rows (JAX-style padding); "
                                      f"keeping the first vocab_size={config.vocab_size}", stacklevel=3)
                        state[ours] = convert(f.get_slice(name)[: config.vocab_size])
                    else:
                        state[ours] = convert(f.get_tensor(name))
        except (OSError, SafetensorError) as exc:  # corrupt data the header check could not see
            raise CheckpointError(f"{file}: cannot read safetensors data ({brief_error(exc)})") from None
    if lm_head_file is not None:
        _check_tied_head(lm_head_file, state["embed_tokens.weight"])
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


def _load_pickled(source: WeightSource, expected: dict, directory: Path, convert) -> dict:
    import torch

    raw: dict[str, torch.Tensor] = {}
    for file in source.files:
        part = _torch_load(file)
        if isinstance(part, dict) and isinstance(part.get("state_dict"), dict):
            part = part["state_dict"]
        if not isinstance(part, dict):
            raise CheckpointError(f"{file}: expected a dict of tensors, found {type(part).__name__}")
        raw.update(part)
    first_file = next(iter(source.files))
    source = WeightSource({first_file: list(raw)}, {k: tuple(v.shape) for k, v in raw.items()}, pickled=True)
    by_ours = _check_names(source, expected, directory)
    rows = expected["embed_tokens.weight"][0]
    emb = raw[by_ours["embed_tokens.weight"]][:rows]  # JAX-style padded rows dropped
    if "lm_head.weight" in raw and not torch.equal(raw["lm_head.weight"][:rows], emb):
        raise CheckpointError(f"{directory}: lm_head.weight differs from the embedding; Gemma ties them")
    state = {}
    for ours, theirs in by_ours.items():
        state[ours] = convert(emb if ours == "embed_tokens.weight" else raw.pop(theirs))
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
    Atomic: everything is written into a temp dir next to out_dir and renamed into place; an existing
    out_dir is replaced only if it is empty or a model directory (has config.json), or with force=True.
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
    state = model.state_dict()
    target = resolve_dtype(dtype, torch.device("cpu"), config) if dtype is not None else \
        next(v.dtype for v in state.values() if v.is_floating_point())
    config = config.replace(torch_dtype=_dtype_name(target))
    shards = _plan_shards(state, target, max_shard_bytes)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is an ordinary one
    try:
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
        if tokenizer_dir is not None:
            copied = [n for n in TOKENIZER_FILES if (Path(tokenizer_dir) / n).is_file()]
            if not copied:
                raise CheckpointError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
            for n in copied:
                shutil.copyfile(Path(tokenizer_dir) / n, tmp / n)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # safetensors writes 0600; a checkpoint is meant to be shared
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def _replace_dir(new: Path, out: Path) -> None:
    """Rename `new` to `out`; an existing `out` is moved aside first and removed only afterwards."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old / out.name, out)  # put the previous checkpoint back
        raise
    shutil.rmtree(old, ignore_errors=True)
