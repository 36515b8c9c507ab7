"""A repository checkout on disk, read for completion context: its root, and its source files,
nearest to the file being edited first, within bounds.

Which files: the data pipeline's rules, so the model is prompted with the kind of files it was
trained on: a supported language; no directory that languages.skip_dir skips
(VCS metadata, vendored code, caches, build output, hidden directories); no symbolic link, so
nothing outside the root is read; only text that data.filters.decode_source accepts (not binary,
UTF-8, at most 1 MB). Quality filters (generated, minified) are not applied: a generated module
the current file imports is still what it depends on.

Bounds, so that a keystroke stays fast in a monorepo: at most MAX_FILES files and MAX_BYTES bytes
are read, and at most MAX_ENTRIES directory entries are looked at. The walk starts in the current
file's directory (its files, then its subdirectories breadth first), then climbs one directory at
a time towards the root, taking each ancestor's other subtrees the same way: what a bound leaves
out is what lies farthest from the current file.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path
from typing import Iterator

from codegemma.data.filters import FilterConfig, decode_source

from .languages import language_of, skip_dir

MAX_FILES = 1000
MAX_BYTES = 8_000_000
MAX_ENTRIES = 20_000
MAX_FILE_BYTES = FilterConfig.max_bytes      # the corpus's own limit (1 MB)


def find_repository_root(path: str | os.PathLike) -> Path | None:
    """The nearest directory at or above `path` holding `.git` (a directory, or a file as in
    worktrees and submodules); None outside a repository. Symbolic links in `path` are kept."""
    here = Path(os.path.abspath(path))
    for d in (here, *here.parents):
        if os.path.exists(d / ".git"):
            return d
    return None


def repository_path(current_file: str | os.PathLike) -> tuple[Path, str] | None:
    """(repository root, the file's POSIX path relative to it), or None outside a repository."""
    root = find_repository_root(Path(os.path.abspath(current_file)).parent)
    if root is None:
        return None
    return root, Path(os.path.abspath(current_file)).relative_to(root).as_posix()


def _source_entries(root: Path, start: Path, max_entries: int) -> Iterator[os.DirEntry]:
    """Source files under `root` (no symbolic links, no skipped directories), nearest to the
    directory `start` first; stops after `max_entries` directory entries."""
    seen, done, d = 0, None, start
    while True:
        queue = deque([d] if d == start or d == root or not skip_dir(d.name) else [])
        while queue:
            entries = []
            try:
                with os.scandir(queue.popleft()) as it:
                    for entry in it:
                        seen += 1
                        if seen > max_entries:
                            break
                        entries.append(entry)
            except OSError:             # unreadable or vanished directory: nothing to take from it
                continue
            subdirs = []
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not skip_dir(entry.name) and entry.path != done:
                            subdirs.append(entry.path)
                    elif entry.is_file(follow_symlinks=False) and language_of(entry.name):
                        yield entry
                except OSError:
                    continue
            if seen > max_entries:
                return
            queue.extend(subdirs)
        if d == root:
            return
        done, d = str(d), d.parent


def _read_regular(path: str, limit: int) -> bytes | None:
    """Up to `limit` + 1 bytes of a regular file; None for anything else (a symbolic link swapped
    in since the walk, a FIFO, a vanished file)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        with open(path, "rb", opener=lambda p, _: os.open(p, flags)) as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            return fh.read(limit + 1)
    except OSError:
        return None


def read_repository(root: str | os.PathLike, current_path: str | os.PathLike | None = None, *,
                    max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES,
                    max_entries: int = MAX_ENTRIES) -> dict[str, str]:
    """The source files of the repository at `root` (POSIX path relative to it -> text), nearest
    to `current_path` (a file or directory inside it; default: the root) first, within the bounds
    in the module doc. Files that cannot be read or decoded are left out."""
    root = Path(os.path.abspath(root))
    start = Path(os.path.abspath(current_path)) if current_path is not None else root
    if not start.is_dir():
        start = start.parent
    if start != root and root not in start.parents:
        raise ValueError(f"{current_path} is not inside the repository {root}")
    files: dict[str, str] = {}
    left = max_bytes
    for entry in _source_entries(root, start, max_entries):
        if len(files) >= max_files or left <= 0:
            break
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        if size > min(MAX_FILE_BYTES, left):
            continue
        text, _ = decode_source(_read_regular(entry.path, MAX_FILE_BYTES), MAX_FILE_BYTES)
        if text is not None:
            files[Path(entry.path).relative_to(root).as_posix()] = text
            left -= size
    return files
