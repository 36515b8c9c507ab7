"""`data stats` and `data inspect`: what a prepared data set contains, for people.

stats: counts, drop reasons, tokens per split, FIM passes and mix; a PNG (matplotlib, Agg) with sequence fill
(real tokens / seq_len), segments per sequence and the file-length histogram.
inspect: the first N sequences decoded with special tokens visible and segments marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codegemma.atomic import atomic_path

from .shards import SPLITS, ShardReader


def _sequence_stats(reader: ShardReader, limit: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """(fill fraction, segments) of up to `limit` sequences, evenly spaced over the split."""
    n = len(reader)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, limit)).astype(int)) if n else []
    fill, segs = [], []
    for i in idx:
        _, seg = reader[int(i)]
        fill.append(float((seg >= 0).mean()))
        segs.append(int(seg.max()) + 1 if seg.max() >= 0 else 0)
    return np.asarray(fill), np.asarray(segs)


def summarize(directory: str | Path) -> dict:
    directory = Path(directory)
    readers = {s: ShardReader(directory, s) for s in SPLITS}
    m = readers["train"].manifest
    counts = m.get("stats", {})
    summary = {
        "seq_len": m["seq_len"],
        # renderings of the train split (counts of FIM decisions cover them all; data sets made
        # before --fim-passes have one)
        "fim_passes": int(m.get("config", {}).get("fim_passes", 1)),
        "splits": {s: {k: v for k, v in m["splits"][s].items() if k not in ("shards", "repositories")}
                   for s in SPLITS},
        "dropped": m.get("dropped", {}),
        "changed": {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("changed/")},
        "counts": {k.split("/", 1)[1]: v for k, v in counts.items()
                   if k.startswith("count/") and "file_chars_log2" not in k and "contaminated" not in k},
        "contaminated_by": {k.split("/")[-1]: v for k, v in counts.items() if k.startswith("count/contaminated/")},
    }
    fim = counts.get("count/fim_psm", 0) + counts.get("count/fim_spm", 0)
    packed = counts.get("count/chunks_packed", 0) or counts.get("count/files_packed", 0)
    if packed:
        summary["fim_rate"] = fim / packed
        summary["spm_share_of_fim"] = counts.get("count/fim_spm", 0) / fim if fim else 0.0
    return summary


def plot(directory: str | Path, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    reader = ShardReader(directory, "train")
    fill, segs = _sequence_stats(reader)
    counts = reader.manifest.get("stats", {})
    hist = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in counts.items() if k.startswith("count/file_chars_log2/"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist(fill, bins=20, range=(0, 1))
    axes[0].set(title="sequence fill (real tokens / seq_len)", xlabel="fill", ylabel="sequences")
    axes[1].hist(segs, bins=np.arange(0.5, int(segs.max(initial=1)) + 1.5))
    axes[1].set(title="documents (segments) per sequence", xlabel="segments", ylabel="sequences")
    if hist:
        axes[2].bar([f"2^{k}" for k, _ in hist], [v for _, v in hist])
    axes[2].set(title="file length (characters, packed files)", xlabel="length", ylabel="files")
    axes[2].tick_params(axis="x", labelrotation=60)
    fig.tight_layout()
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:     # keeps the .png suffix: matplotlib picks the format from it
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out_png


def inspect(directory: str | Path, n: int = 3, split: str = "train", tokenizer_dir: str | None = None) -> str:
    """The first `n` sequences decoded, special tokens shown, each segment on its own block."""
    from codegemma.tokenizer import Tokenizer

    reader = ShardReader(directory, split)
    if tokenizer_dir is None:
        raise ValueError("--tokenizer DIR is needed to decode (the tokenizer the data was prepared with)")
    tok = Tokenizer.load(tokenizer_dir)
    want = reader.manifest.get("tokenizer", {}).get("vocab_size")
    if want and want != tok.vocab_size:
        raise ValueError(f"--tokenizer {tokenizer_dir}: vocabulary size {tok.vocab_size} differs from the "
                         f"data set's {want}; pass the tokenizer used by `data prepare`")
    if len(reader) == 0:
        return f"{split}: no sequences (a single repository has no validation split)"
    out = []
    for i in range(min(n, len(reader))):
        tokens, seg = reader[i]
        out.append(f"===== {split} sequence {i} ({int((seg >= 0).sum())}/{reader.seq_len} tokens, "
                   f"{int(seg.max()) + 1} segments) =====")
        for s in range(int(seg.max()) + 1):
            ids = tokens[seg == s]
            out.append(f"----- segment {s} ({ids.size} tokens) -----")
            out.append(tok.decode(ids.tolist(), skip_special_tokens=False))
        pad = int((seg < 0).sum())
        if pad:
            out.append(f"----- padding: {pad} x <pad> -----")
    return "\n".join(out)
