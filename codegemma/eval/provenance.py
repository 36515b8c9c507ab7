"""What produced a run's samples, so that `eval run` resumes only what it can trust.

Every sample row of OUT/samples.jsonl carries `"run": {...}`: the benchmark, the model (its path
and a sha256 of its files), the decoding settings and the FIM mode. A rerun into the same --out
resumes only when the stored record equals the new one (the model path may differ: the same
bytes are the same model); otherwise it refuses with one line, and `--overwrite` starts over.

The model hash covers the files that decide what the model generates: config.json, the weight
files and the tokenizer files, hashed whole (a checksum of the safetensors headers and sizes
would call two checkpoints of one shape the same model, e.g. a fine-tune and its base). Hashing
a 7B checkpoint takes a minute, so each file's sha256 is cached in <cache>/model-hashes.json
under its real path, size, mtime and inode; a rewritten file gets a new mtime and is hashed
again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from codegemma.atomic import atomic_write_text
from codegemma.eval.datasets import cache_root, sha256_of

# Bumped when prompts or stop rules change what a model's samples look like.
GENERATION_VERSION = 2  # 2: single-line infilling stops at the first newline
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json", ".gguf")
MODEL_FILE_NAMES = ("config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                    "special_tokens_map.json")
IDENTITY = ("benchmark", "model_sha256", "fim_mode", "max_new_tokens", "temperature", "seed",
            "dtype", "generation_version")


def _hash_cache() -> Path:
    return cache_root() / "model-hashes.json"


def model_files(model_dir: str | os.PathLike) -> list[Path]:
    directory = Path(model_dir)
    files = sorted(p for p in directory.iterdir() if p.is_file()
                   and (p.name in MODEL_FILE_NAMES or p.name.endswith(MODEL_FILE_SUFFIXES)))
    if not any(p.name != "config.json" and p.name not in MODEL_FILE_NAMES for p in files):
        raise FileNotFoundError(f"{directory}: no weight files (model.safetensors, ...) to "
                                "identify the model by; pass a model directory")
    return files


def model_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 over (name, sha256) of the model's files, with per-file hashes cached."""
    try:
        cache = json.loads(_hash_cache().read_text())
    except (OSError, ValueError):
        cache = {}
    changed = False
    digest = hashlib.sha256()
    for path in model_files(model_dir):
        st = path.stat()
        key = os.path.realpath(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = cache.get(key)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            entry = {"stamp": stamp, "sha256": sha256_of(path)}
            cache[key] = entry
            changed = True
        digest.update(f"{path.name}\0{entry['sha256']}\n".encode())
    if changed:
        try:
            atomic_write_text(_hash_cache(), json.dumps(cache, indent=1))
        except OSError as exc:  # only costs a rehash next time
            print(f"warning: could not cache model hashes in {_hash_cache()}: {exc}",
                  file=sys.stderr)
    return digest.hexdigest()


def run_record(benchmark: str, model_dir: str | os.PathLike, fim_mode: str | None,
               max_new_tokens: int, temperature: float, seed: int, dtype: str | None) -> dict:
    """`fim_mode` only for infilling benchmarks (it changes nothing left to right)."""
    return {"benchmark": benchmark, "model": str(Path(model_dir).resolve()),
            "model_sha256": model_sha256(model_dir), "fim_mode": fim_mode,
            "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
            "dtype": dtype, "generation_version": GENERATION_VERSION}


def _describe(record: dict | None, key: str) -> str:
    if record is None:
        return "none"
    value = record.get(key)
    return value[:12] if key == "model_sha256" and isinstance(value, str) else repr(value)


def check_resume(samples_path: str | os.PathLike, record: dict) -> None:
    """Raise ValueError (one line) unless every row already in `samples_path` was generated
    with `record`'s identity."""
    path = Path(samples_path)
    if not path.exists():
        return
    stored = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line: generation repairs it
            run = row.get("run") if isinstance(row, dict) else None
            if run is None or any(run.get(k) != record.get(k) for k in IDENTITY):
                stored = run
                break
        else:
            return
    if stored is None:
        differs = "it has no run record (written by an older codegemma or by hand)"
    else:
        diffs = [f"{k} {_describe(stored, k)} there, {_describe(record, k)} now"
                 for k in IDENTITY if stored.get(k) != record.get(k)]
        model = f" (model {stored.get('model')})" if stored.get("model") != record["model"] else ""
        differs = "; ".join(diffs) + model
    raise ValueError(f"{path} holds samples of another run: {differs}. Rerun with the same "
                     "settings to resume, use another --out, or pass --overwrite to start over")
