"""Fixtures for the training tests: tiny packed shard directories and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codegemma.data.shards import FORMAT_NAME, ShardWriter, atomic_write_json

REPO = Path(__file__).resolve().parents[2]


def make_shards(out: Path, seq_len: int = 32, docs: int = 24, val_docs: int = 6, seed: int = 0,
                vocab: int = 512, tokenizer: Path | None = None) -> Path:
    """A packed data set of arithmetic-progression documents (learnable: each token fixes the next)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", docs), ("val", val_docs)):
        w = ShardWriter(out, split, seq_len=seq_len, pad_id=0, sequences_per_shard=4)
        for _ in range(n):
            length, start = int(rng.integers(6, 40)), int(rng.integers(0, 300))
            body = [120 + (start + 7 * j) % 380 for j in range(length)]
            w.add_document(np.array([2] + body, dtype=np.uint32))
        splits[split] = {"shards": w.close()}
    manifest = {"format": FORMAT_NAME, "seq_len": seq_len, "pad_id": 0, "splits": splits}
    if tokenizer is not None:
        manifest["tokenizer"] = {"path": str(tokenizer)}
    atomic_write_json(out / "manifest.json", manifest)
    return out


@pytest.fixture
def shards(tmp_path) -> Path:
    return make_shards(tmp_path / "data")


def run_cli(args: list[str], env: dict | None = None, torchrun: int = 0, timeout: int = 240,
            kill_after_step: int | None = None):
    """`python -m codegemma train ...` (or under torchrun) in a subprocess; returns CompletedProcess.

    kill_after_step=K: every process SIGKILLs itself right after its (K + 1)-th optimizer step, that
    is after step K was logged and checkpointed if due (tests/kill_at.py: the fault comes from outside)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    module = ["-m", "codegemma"]
    if kill_after_step is not None:
        module = ["-m", "tests.kill_at", "codegemma.train.loop:optimizer_step", str(kill_after_step + 1), "--"]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
               *module, "train", *args]
    else:
        cmd = [sys.executable, *module, "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def read_records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]
