"""What a run reports: flops and MFU, JSON lines (plus TensorBoard when installed), the loss plot.

MFU counts the model flops of a training step, not what the hardware happened to do
(`step_flops`; under the document mask attention is counted per document, as computed):
    6 * N * tokens                                  (N = all parameters; the tied output head is a
                                                     real [H,V] matmul, so the embedding counts)
  + 6 * layers * heads * head_dim * seq_len * tokens   attention scores and values, forward and
                                                     backward (12 * L * H * d * T per token for full
                                                     attention, halved because causal attention does
                                                     half the work; flash attention skips it too)
Activation recomputation is not counted (it is overhead, not model work). LoRA still runs the
full forward and backward through the activations: 6N stays an honest upper bound there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from codegemma.atomic import atomic_path, atomic_write_text

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by a substring of the device name.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def flops_per_token(config, seq_len: int) -> float:
    """Training flops per token (forward + backward) of a GemmaConfig at `seq_len`."""
    dense = 6.0 * config.num_parameters(embeddings=True)
    attention = 6.0 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return dense + attention


def step_flops(config, tokens: int, attended: int) -> float:
    """Training flops of `tokens` tokens whose attention spans sum to `attended`: the sum over
    attention units (rows, or documents under the document mask) of length^2."""
    dense = 6.0 * config.num_parameters(embeddings=True) * tokens
    return dense + 6.0 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * attended


def attended_squares(segments, masked: bool) -> int:
    """sum of L^2 over attention units of a [B,T] segment batch (rows when not document-masked)."""
    import torch

    b, t = segments.shape
    if not masked:
        return b * t * t
    return sum(int((torch.bincount(row + 1).long() ** 2).sum()) for row in segments.cpu().long())


class MetricsLog:
    """Appends one JSON object per line to `path` (first process only) and mirrors scalars to TensorBoard."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard_dir: Path | None = None):
        self.path, self.enabled = Path(path), enabled
        self._tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional: JSON lines are the record
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines from steps after the checkpoint, so the log reads as one run."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(log_path: Path, png_path: Path) -> Path | None:
    """Training (and validation) loss against step, as a PNG; None when there is nothing to plot."""
    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["loss"]) for r in records if r.get("kind") == "val"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return png_path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The run's progress on stderr: a tqdm bar on a terminal; otherwise (a log file, CI, or
    --no-progress) one plain line at the first step, about every `every_s` seconds and at the end,
    so a long run shows it is alive without filling a log with carriage returns."""

    def __init__(self, total: int, initial: int, bar: bool, every_s: float = 10.0, stream=None):
        self.total, self.initial, self.every_s = total, initial, every_s
        self.stream = stream or sys.stderr
        self.start = self.last_line = time.monotonic()
        self.loss: float | None = None
        self.tokens_per_s = 0.0
        self.bar = None
        if bar and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                            file=self.stream)

    def logged(self, loss: float, lr: float, tokens_per_s: float) -> None:
        """The numbers of a metrics line (every --log-every steps)."""
        self.loss, self.tokens_per_s = loss, tokens_per_s
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}")

    def step(self, step: int, last: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if not (last or step == self.initial + 1 or now - self.last_line >= self.every_s):
            return
        self.last_line = now
        done = step - self.initial
        left = (now - self.start) / done * (self.total - step) if done else 0.0
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        print(f"train: step {step}/{self.total}{loss}, {self.tokens_per_s:,.0f} tokens/s, "
              f"{_clock(now - self.start)} elapsed, {_clock(left)} left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
