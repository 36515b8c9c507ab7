"""What a training run is: one frozen dataclass, read from a TOML file and overridden by flags.

No torch here. The TOML file holds the same names as the fields below (`seq_len` or `seq-len`);
an unknown key is an error that lists the valid ones, so a typo never silently trains with a
default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    # ---- what to train on (exactly one of data / sft) -----------------------------------------
    out: str = ""  # run directory: checkpoints/, metrics.jsonl, final/ (the exported model)
    data: str | None = None  # packed shard directory (codegemma data prepare): next-token pretraining
    sft: str | None = None  # JSON lines {"messages": [...]}: instruction tuning, loss on model turns
    sft_val: str | None = None  # optional held-out JSON lines for validation loss during SFT
    # ---- where the weights start -------------------------------------------------------------
    preset: str | None = None  # random init from a preset (debug, 2b, 7b)
    init: str | None = None  # fine-tune from a Hugging Face model directory (codegemma or transformers)
    tokenizer: str | None = None  # tokenizer for SFT and export; default: data manifest, then --init
    allow_nonfinite: bool = False  # load an --init model whose weights hold NaN/Inf (refused by default)
    # ---- sizes ---------------------------------------------------------------------------------
    steps: int = 1000  # optimizer steps (the schedule's length)
    max_minutes: float | None = None  # stop (checkpoint, validate, export) once this much wall time has passed
    seq_len: int | None = None  # default: the shards' sequence length (packed), 2048 (SFT)
    batch_tokens: int | None = None  # global tokens per optimizer step; default seq_len * micro_batch * world
    micro_batch: int = 1  # sequences per forward pass on each process; accumulation fills batch_tokens
    # ---- optimisation --------------------------------------------------------------------------
    lr: float = 3e-4  # peak learning rate (after warmup)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int | None = None  # default: min(100, steps // 10)
    weight_decay: float = 0.1  # on matrices only (not norms, not LoRA-frozen weights)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # ---- LoRA ----------------------------------------------------------------------------------
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float | None = None  # default 2 * rank (scale alpha / rank)
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # ---- the step's numerics and speed -----------------------------------------------------------
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    doc_mask: bool = True  # no attention across packed document boundaries; positions restart per document
    compile: bool = False  # torch.compile each decoder layer
    activation_checkpointing: str = "none"  # none | full | every-N (checkpoint every N-th layer)
    loss_chunk: int = 2048  # tokens per chunk of the fused output-projection + cross-entropy
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    # ---- bookkeeping ---------------------------------------------------------------------------
    log_every: int = 1
    val_every: int = 200  # steps between validation losses; 0 = never
    val_batches: int = 8  # micro-batches per validation (per process), fewer when that covers the val rows
    ckpt_every: int = 500  # steps between checkpoints, and one at the end; 0 = none at all (benchmarks)
    keep_checkpoints: int = 2  # older ones are deleted after a newer one is complete
    resume: bool = False  # continue from the newest checkpoint in out/checkpoints
    export: bool = True  # write out/final (merged Hugging Face directory) at the end
    peak_tflops: float | None = None  # for MFU; default from a table of device names
    progress: bool = True  # tqdm bar on the first process

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out DIR is required (the run directory)")
        if (self.data is None) == (self.sft is None):
            raise ValueError("give exactly one of --data DIR (pretraining) or --sft FILE (instruction tuning)")
        if (self.preset is None) == (self.init is None):
            raise ValueError("give exactly one of --preset NAME (random init) or --init DIR (fine-tune)")
        for name in ("steps", "micro_batch", "log_every", "val_batches", "keep_checkpoints", "loss_chunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("val_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("seq_len", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 1:
                raise ValueError(f"{name} must be > 1, got {value}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            hint = " (did you mean cuda?)" if self.device.lower() in ("gpu", "nvidia") else ""
            raise ValueError(f"--device {self.device!r} is not one of auto, cpu, cuda{hint}")
        ac = self.activation_checkpointing
        if ac not in ("none", "full") and not (ac.startswith("every-") and ac[6:].isdigit() and int(ac[6:]) > 0):
            raise ValueError(f"activation_checkpointing must be none, full or every-N, got {ac!r}")

    @property
    def lora_scale(self) -> float:
        alpha = self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank
        return alpha / self.lora_rank if self.lora_rank else 0.0

    def resolved_warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 10)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """TOML gives lists for tuples; everything else must already have the field's type."""
    if name == "lora_targets":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{source}: lora_targets must be a list of module names like ['q_proj', 'v_proj']")
        return tuple(value)
    kind = _TYPES[FIELDS[name].type.split(" |")[0]]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{source}: {name} must be {kind.__name__}, got {value!r}")
    return value


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def read_toml(path: str | Path) -> dict[str, Any]:
    """The flat table of a config file, with `-` in keys read as `_`; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train config {path} not found; pass an existing TOML file to --config")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc}); fix the file") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ValueError(f"{path}: unknown key {key!r}; valid keys are {', '.join(sorted(FIELDS))}")
        out[name] = _coerce(name, value, str(path))
    return out


def build_config(file: str | Path | None = None, **flags: Any) -> TrainConfig:
    """File values first, then every flag that is not None on top."""
    values: dict[str, Any] = read_toml(file) if file else {}
    for name, value in flags.items():
        if name not in FIELDS:
            raise ValueError(f"unknown option {name!r}")
        if value is not None:
            values[name] = _coerce(name, value, "flags")
    try:
        return TrainConfig(**values)
    except TypeError as exc:  # a wrong type in the file reaches the dataclass as a TypeError
        raise ValueError(f"train config: {exc}") from None
