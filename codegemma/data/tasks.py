"""The two parallel stages, as plain functions of a picklable task dict (local processes or Ray).

A task covers a fixed group of repositories (planned once, independent of the worker count). It
writes all its outputs atomically, then its done marker; a task whose marker exists is skipped
on a rerun, and a task killed half-way simply runs again (its partial files are overwritten).

clean_task:    read -> decode/size/binary -> quality (generated, minified, ...) -> decontaminate
               -> PII redaction -> SHA-1 + MinHash signature (of the normalised text).
               Writes <stage>/task-N.jsonl (the surviving documents), task-N.sig.npy
               ([n, 128] uint32) and task-N.meta.json.
tokenize_task: the task's clean documents minus the global duplicate list -> per repository
               RepositoryPacker.arrange once, then per FIM pass k render + encode ->
               <pass k stage>/<repo key>.npy; per pass task-N.meta.json and its done marker.
               Each pass has a stage directory of its own (tokens/, tokens-pass1/, ...) whose
               files do not depend on how many passes the run makes, so a task makes only the
               passes not yet marked done. One rendering is held at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from codegemma.atomic import atomic_path, atomic_write_bytes

from .decontam import Decontaminator
from .document import Document, FilterStep, Stats, run_steps
from .filters import FilterConfig, decode_step, quality_step
from .hashing import MinHasher, normalise
from .pii import redact_pii
from .readers import read_repository, repo_key
from .shards import atomic_write_json


def task_name(index: int) -> str:
    return f"task-{index:05d}"


def done_marker(stage_dir: Path, index: int) -> Path:
    return stage_dir / f"{task_name(index)}.done"


def mark_done(stage_dir: Path, index: int) -> None:
    atomic_write_bytes(done_marker(stage_dir, index), b"ok\n")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def clean_task(task: dict) -> None:
    """Stage 1 for the repositories in task["repos"] (entries of the plan)."""
    stage_dir = Path(task["stage_dir"])
    cfg = FilterConfig(**task["filters"])
    stats = Stats()
    decon = Decontaminator.load(Path(task["decontam"])) if task.get("decontam") else None
    hasher = MinHasher()

    def decontaminate(doc: Document) -> str | None:
        norm = normalise(doc.text)
        doc.meta["normalised"] = norm
        if decon is not None:
            bench = decon.check(norm)
            if bench is not None:
                stats.add(f"contaminated/{bench}")
                return "contaminated"
        return None

    def redact(docs, stats_):
        for doc in docs:
            doc.text = redact_pii(doc.text, stats_)
            yield doc

    steps = [decode_step(cfg), quality_step(cfg), FilterStep("decontaminate", decontaminate), redact]
    records, sigs = [], []
    for entry in task["repos"]:
        stats.add("repositories")
        for doc in run_steps(steps, read_repository(entry, cfg.max_bytes), stats):
            sha = hashlib.sha1(doc.text.encode("utf-8", "surrogatepass")).hexdigest()
            # near-dup works on the normalised text made for decontamination (before PII
            # redaction, which changes a few characters at most); the SHA-1 is of the final text
            sig = hasher.signature(doc.meta.pop("normalised"))
            records.append({"repo": doc.repo, "path": doc.path, "language": doc.language,
                            "sha1": sha, "text": doc.text})
            sigs.append(sig if sig is not None else np.zeros(hasher.num_perm, dtype=np.uint32))
            records[-1]["has_sig"] = sig is not None
            stats.add("files_clean")
    name = task_name(task["index"])
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_bytes(stage_dir / f"{name}.jsonl", lines.encode("utf-8", "surrogatepass"))
    _save_npy(stage_dir / f"{name}.sig.npy",
              np.stack(sigs) if sigs else np.zeros((0, hasher.num_perm), dtype=np.uint32))
    atomic_write_json(stage_dir / f"{name}.meta.json", {
        "stats": stats.to_dict(),
        "items": [[r["repo"], r["path"], r["sha1"], r["has_sig"]] for r in records],
    })
    mark_done(stage_dir, task["index"])


def tokens_stage_name(fim_pass: int) -> str:
    """The stage directory of FIM pass `fim_pass` (pass 0 keeps the single-pass name)."""
    return "tokens" if fim_pass == 0 else f"tokens-pass{fim_pass}"


def tokenize_task(task: dict) -> None:
    """Stage 3: pack and tokenise every repository of one clean task, in each FIM pass asked for.

    task["passes"]: [[pass number, its stage directory], ...] to make (the others are done);
    task["val_repos"]: repositories that get pass 0 only (the validation split).
    One packer (one tokenizer) serves every pass: the tokenizers library does not give back the
    memory of a dropped tokenizer's BPE cache, so a tokenizer per pass would grow a worker N-fold.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # one core per worker
    from codegemma.tokenizer import Tokenizer

    from .packing import FimConfig, RepositoryPacker

    clean_file = Path(task["clean_file"])
    with open(task["dropped_file"]) as fh:
        dropped = {(r, p) for r, p, _ in json.load(fh)["dropped"]}
    val = set(task.get("val_repos", ()))
    passes = {int(k): Path(d) for k, d in task["passes"]}
    stats = {k: Stats() for k in passes}
    tokens_per_repo: dict[int, dict[str, int]] = {k: {} for k in passes}
    # counts about files are the same in every pass: pass 0 records them
    file_stats = stats.get(0, Stats())
    packer = RepositoryPacker(Tokenizer.load(task["tokenizer"]), FimConfig(**task["fim"]), task["seed"])
    by_repo: dict[str, list[Document]] = {}
    with open(clean_file, encoding="utf-8", errors="surrogatepass") as fh:
        for line in fh:
            r = json.loads(line)
            if (r["repo"], r["path"]) in dropped:
                continue
            by_repo.setdefault(r["repo"], []).append(Document(r["repo"], r["path"], r["text"], r["language"]))
    for repo in sorted(by_repo):
        todo = [k for k in sorted(passes) if k == 0 or repo not in val]
        if not todo:
            del by_repo[repo]
            continue
        arranged = packer.arrange(by_repo.pop(repo), file_stats)
        for k in todo:
            tokens = packer.encode(packer.render(arranged, stats[k], k), stats[k])
            _save_npy(passes[k] / f"{repo_key(repo)}.npy", tokens)
            tokens_per_repo[k][repo] = int(tokens.size)
    for k, stage_dir in passes.items():
        atomic_write_json(stage_dir / f"{task_name(task['index'])}.meta.json",
                          {"stats": stats[k].to_dict(), "tokens": tokens_per_repo[k], "fim_pass": k})
        mark_done(stage_dir, task["index"])
