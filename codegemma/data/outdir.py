"""The output folder of `data prepare`: what a run may write into, what it resumes, what it leaves.

What a run may write into (`claim`):
- a folder that does not exist yet, or an empty one;
- a folder holding this run's finished data set (its manifest has the same fingerprint): nothing
  to do;
- a folder holding this run's unfinished work (`OUT/.work/<key>` of the same settings): resumed;
- anything else (a data set or an unfinished run of other settings, unrelated files) only with
  --overwrite: the data set there (manifest, shards, tokenizer/) is then replaced when the new one
  is packed, and other files are left alone. An existing file is never an output folder.

What is state and what is garbage:
- Resumable state: the work directory. Every file in it is whole (atomic writes) and a task's
  `.done` marker is written after its outputs, so any subset of it is a valid place to resume
  from. A run that stops for a reason a rerun can get past (an interrupt, SIGKILL, a full disk, a
  permission, a crashed worker, an unexpected error) keeps it.
- Garbage, removed: temporaries of atomic writes (removed by codegemma.atomic on an error; after
  a SIGKILL, by the next run of that folder: `sweep_temporaries`); shards of a pack stage that
  failed (a data set without a manifest is no data set: `discard_data_set`); the work directory of
  a run that failed on its input or settings (`failure_is_final`: the same arguments would fail the
  same way, so there is nothing to resume) and the output folder itself if that run created it;
  after a success, all of `OUT/.work` (work of other settings included: the folder now holds this
  data set) unless --keep-work.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .shards import FORMAT_NAME, MANIFEST, remove_shards

WORK_DIR = ".work"

# Temporaries of codegemma.atomic (".NAME.tmp-XXXX[.suffix]", ".NAME.old-XXXX") of our own outputs
_OUR_TEMPORARY = re.compile(r"^\.(manifest\.json|(train|val)-\d+\.(tokens\.bin|index\.npy)|tokenizer|stats\.png)"
                            r"\.(tmp|old)-")


def read_manifest(out: Path) -> dict | None:
    """The manifest of a data set in `out`, or None (absent, unreadable or not ours)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME else None


def claim(out: Path, work: Path, fingerprint: str, overwrite: bool) -> str:
    """How this run may use `out`: "new", "done", "resume" or "overwrite" (see the module doc);
    raises with one line naming the folder and the fix otherwise."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the data set (a new or empty one)")
    if not out.is_dir() or not any(out.iterdir()):
        return "new"
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("work_fingerprint") == fingerprint:
        return "done"
    if overwrite:
        return "overwrite"
    if manifest is not None:
        raise FileExistsError(f"--out {out} already holds a data set prepared with other settings; add "
                              "--overwrite to replace it, or choose another --out")
    if work.is_dir():
        return "resume"
    raise FileExistsError(f"--out {out} is not empty and holds no unfinished run of these settings to resume; "
                          "choose a new or empty folder, or add --overwrite to write the data set into it")


def sweep_temporaries(out: Path) -> None:
    """Remove what atomic writes left behind when a run was SIGKILLed (no handler ran then)."""
    candidates = [p for p in out.iterdir() if _OUR_TEMPORARY.match(p.name)]
    if (out / WORK_DIR).is_dir():
        candidates += [p for p in (out / WORK_DIR).rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    for p in candidates:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def discard_data_set(out: Path) -> None:
    """Remove the shards, manifest and tokenizer copy of a pack stage that did not finish."""
    remove_shards(out)
    if (out / "tokenizer").is_dir():
        shutil.rmtree(out / "tokenizer", ignore_errors=True)


def failure_is_final(exc: BaseException) -> bool:
    """A failure the same command would meet again (bad input or settings): its work is garbage.
    Anything else (interrupt, full disk, permissions, a crashed worker) may be resumed."""
    return isinstance(exc, (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
                            NotADirectoryError))


def remove_work(out: Path, work: Path | None = None) -> None:
    """Remove one work directory (or, with work=None, all of OUT/.work), then .work if empty."""
    root = out / WORK_DIR
    shutil.rmtree(work if work is not None else root, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
