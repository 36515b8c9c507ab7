"""Everything a run needs before its first step: data, tokenizer, model, optimiser, schedule.

Each function does one thing in torchtitan's order, so the loop reads as a list of calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from codegemma.tokenizer.files import find_tokenizer, locate_tokenizer
from codegemma.train.config import TrainConfig
from codegemma.train.parallel import Runtime


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Data:
    train: object  # PackedRows | ChatRows
    val: object | None
    seq_len: int
    tokenizer_dir: Path | None


def _manifest_tokenizer(data_dir: Path, manifest: dict) -> Path | None:
    """The tokenizer a packed data set was made with: manifest["tokenizer"] (a path, or a dict
    with "path"/"dir"), else tokenizer files inside the data directory."""
    entry = manifest.get("tokenizer")
    if isinstance(entry, dict):
        entry = entry.get("path") or entry.get("dir") or entry.get("source")
    candidates = [Path(entry)] if isinstance(entry, str) else []
    candidates += [data_dir / "tokenizer", data_dir]
    for c in candidates:
        found = find_tokenizer(c if c.is_absolute() or c.exists() else data_dir / c)
        if found is not None:
            return found.parent
    return None


def _tokenizer_dir(cfg: TrainConfig, manifest: dict | None) -> Path | None:
    """The directory of the run's tokenizer (its files are copied into final/): --tokenizer, else
    the data set's, else the --init model's."""
    if cfg.tokenizer:
        return locate_tokenizer(cfg.tokenizer).parent
    if manifest is not None:
        found = _manifest_tokenizer(Path(cfg.data), manifest)
        if found is not None:
            return found
    found = find_tokenizer(cfg.init) if cfg.init else None
    return found.parent if found is not None else None


def build_data(cfg: TrainConfig, max_positions: int) -> Data:
    from codegemma.train.data import ChatRows, PackedRows

    if cfg.data is not None:
        train = PackedRows(cfg.data, "train")
        if cfg.seq_len is not None and cfg.seq_len != train.seq_len:
            raise ValueError(f"--seq-len {cfg.seq_len} differs from the shards' seq_len {train.seq_len} in "
                             f"{cfg.data}; leave --seq-len out or re-pack the data with that length")
        val = PackedRows(cfg.data, "val") if "val" in train.manifest.get("splits", {}) else None
        val = val if val is not None and len(val) else None
        seq_len, tok = train.seq_len, _tokenizer_dir(cfg, train.manifest)
    else:
        tok = _tokenizer_dir(cfg, None)
        if tok is None:
            raise ValueError("--sft needs a tokenizer: pass --tokenizer DIR or an --init model directory with one")
        from codegemma.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(tok)
        seq_len = cfg.seq_len or min(2048, max_positions)
        train = ChatRows(cfg.sft, tokenizer, seq_len)
        val = ChatRows(cfg.sft_val, tokenizer, seq_len) if cfg.sft_val else None
    if seq_len > max_positions and cfg.init is not None:
        # A preset is sized to the data (preset_config); a trained model's context is what it learnt.
        fix = (f"prepare the data again with `codegemma data prepare ... --seq-len {max_positions}`"
               if cfg.data is not None else f"pass --seq-len {max_positions} or less")
        where = f"the rows in {cfg.data} are" if cfg.data is not None else "--seq-len is"
        raise ValueError(f"{where} {seq_len} tokens, longer than the {max_positions} positions of --init "
                         f"{cfg.init} (max_position_embeddings); {fix}")
    return Data(train, val, seq_len, tok)


# ---- model -------------------------------------------------------------------------------------
def model_config(cfg: TrainConfig):
    """The GemmaConfig of --preset or --init, read without loading weights (to check the data first)."""
    if cfg.init is not None:
        from codegemma.model.checkpoint import load_config

        return load_config(cfg.init)
    from codegemma.model.config import get_preset

    return get_preset(cfg.preset)


def preset_config(name: str, tokenizer_dir: Path | None, seq_len: int | None = None):
    """A preset's shape sized to its data: the vocabulary of the tokenizer the data was made with
    (the debug preset's 512 fits only `codegemma init`'s), and a context of at least the rows'
    length. RoPE has no position weights, so the context costs no parameters; training on the rows
    as prepared keeps every FIM example whole, where cutting 8192-token rows to fit would split
    some between prefix and middle."""
    from codegemma.model.config import get_preset

    config = get_preset(name)
    if seq_len is not None and seq_len > config.max_position_embeddings:
        config = config.replace(max_position_embeddings=seq_len)
    if tokenizer_dir is not None:
        from codegemma.tokenizer import Tokenizer

        config = config.replace(vocab_size=Tokenizer.load(tokenizer_dir).vocab_size)
    return config


def build_model(cfg: TrainConfig, rt: Runtime, tokenizer_dir: Path | None = None, seq_len: int | None = None):
    """(Gemma with fp32 master weights, its GemmaConfig), on this process's device unless sharded later."""
    from codegemma.model.transformer import Gemma

    # With FSDP2 the full model is built on the CPU and fully_shard moves each process's shard.
    home = torch.device("cpu") if rt.distributed else rt.device
    if cfg.init is not None:
        from codegemma.model.checkpoint import load_model

        model, config = load_model(cfg.init, device=home, dtype=torch.float32, allow_nonfinite=cfg.allow_nonfinite)
    else:
        config = preset_config(cfg.preset, tokenizer_dir, seq_len)
        with torch.device(home):
            model = Gemma(config)
        model.init_weights(cfg.seed)
        model = model.float()
    return model.train(), config


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (embedding, projections, LoRA A/B), not norm offsets; only trainable ones."""
    decay, plain = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else plain).append(p)
    if not decay and not plain:
        raise ValueError("no trainable parameters (check --lora-targets)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, module: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # Fused AdamW: one kernel per step instead of a dozen per tensor (CUDA); foreach on the CPU.
    fused = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(module, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused, foreach=None if fused else True)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup steps, then cosine from lr down to lr * min_lr_ratio at the last step."""
    warmup = cfg.resolved_warmup()
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(1, cfg.steps - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
