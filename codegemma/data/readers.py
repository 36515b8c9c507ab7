"""Where documents come from: repository trees, JSON lines, or this Python's own libraries.

`plan_sources(input)` lists every repository and its candidate files (path, size) once, in sorted
order; the plan is saved with the run so a resumed run reads exactly the same files.

- A directory whose subdirectories are repositories (plain trees or git checkouts). Files at its
  top level are ignored. Directories of VCS metadata, vendored code, caches, build output, hidden
  ones and package metadata (codegemma.repo.languages.skip_dir) are not entered; symbolic links
  are not followed. The same rules pick the files of a repository used as completion context
  (codegemma.repo.checkout).
- A `.jsonl` / `.jsonl.gz` file of `{"repo", "path", "content"}` records; it is split into one
  file per repository under the work directory first (`split_jsonl`). Lines are read in bounded
  pieces: a line too long to hold a file of the size limit is skipped unread (`too_large`).
- No input: the running Python's standard library (repository "stdlib") and each top-level entry
  of site-packages ("site-packages/<name>").
Only files whose name gives a supported language (codegemma.repo.languages) are listed.

Names are kept as the operating system gives them: a name that is not UTF-8 carries its bytes as
lone surrogates (Python's surrogateescape), and so may a JSON string; the first filter step drops
such files (`filters.path_problem`), so nothing downstream has to encode them. Contents are read
after a size check (`read_file`), never more than the limit + 1 bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import site
import stat
import sysconfig
from pathlib import Path
from typing import Iterator

from codegemma.atomic import atomic_file
from codegemma.repo.languages import language_of, skip_dir

from .document import Document, Stats
from .filters import FilterConfig

MAX_BYTES = FilterConfig.max_bytes


def repo_key(name: str) -> str:
    """A file-system-safe, collision-free key for a repository name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return f"{safe}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def list_tree(root: Path) -> list[tuple[str, int]]:
    """(relative POSIX path, size) of the supported source files under `root`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not skip_dir(d))
        for name in filenames:
            if language_of(name) is None:
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:          # vanished while listing
                continue
            if not stat.S_ISREG(st.st_mode):   # links, pipes, devices
                continue
            out.append((os.path.relpath(full, root).replace(os.sep, "/"), st.st_size))
    out.sort()
    return out


def default_roots() -> list[tuple[str, Path]]:
    """(repository name, root) for the stdlib and every top-level site-packages entry."""
    roots = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    seen = set()
    for sp in [*site.getsitepackages(), site.getusersitepackages()]:
        sp = Path(sp)
        if not sp.is_dir() or sp in seen:
            continue
        seen.add(sp)
        for entry in sorted(sp.iterdir()):
            if skip_dir(entry.name) or entry.name.endswith(".pth"):
                continue
            if entry.is_dir() or language_of(entry.name):
                roots.append((f"site-packages/{entry.name}", entry))
    return roots


def check_input(input_path: str | None) -> None:
    """--input must name a directory or a JSON-lines file (None: the default corpus)."""
    if input_path is None:
        return
    p = Path(input_path)
    if not p.exists():
        raise FileNotFoundError(f"--input {p}: no such file or directory")
    if not p.is_dir() and not p.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        raise ValueError(f"--input {p}: expected a directory of repositories or a .jsonl(.gz) file")


def plan_sources(input_path: str | None, work_dir: Path, max_bytes: int = MAX_BYTES,
                 stats: Stats | None = None) -> list[dict]:
    """One entry per repository: {"repo", "root" | "jsonl", "files": [[path, size], ...]}, by name.
    JSON-lines records dropped while splitting (too large) are counted in `stats`."""
    if input_path is None:
        repos = []
        for name, root in default_roots():
            files = [(root.name, root.stat().st_size)] if root.is_file() else list_tree(root)
            repos.append({"repo": name, "root": str(root.parent if root.is_file() else root), "files": files})
    else:
        check_input(input_path)
        p = Path(input_path)
        if not p.is_dir():
            repos = split_jsonl(p, work_dir / "input", max_bytes, stats if stats is not None else Stats())
        else:
            repos = [{"repo": d.name, "root": str(d), "files": list_tree(d)}
                     for d in sorted(p.iterdir()) if d.is_dir() and not skip_dir(d.name)]
    repos = [r for r in repos if r["files"]]
    repos.sort(key=lambda r: r["repo"])
    return repos


def limit_plan(plan: list[dict], limit_mb: float | None) -> list[dict]:
    """The plan cut after `limit_mb` MB of files (repositories by name, files by path)."""
    if not limit_mb:
        return plan
    budget, out = int(limit_mb * 1e6), []
    for entry in plan:
        files = []
        for f in entry["files"]:
            if budget <= 0:
                break
            files.append(f)
            budget -= f[1]
        if files:
            out.append({**entry, "files": files})
        if budget <= 0:
            break
    return out


def bounded_lines(path: Path, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of a (gzipped) file read in pieces of at most `max_line` + 1 bytes; a
    longer line is skipped without being held in memory and given as None."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        lineno = 0
        while line := fh.readline(max_line + 1):
            lineno += 1
            if len(line) > max_line and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = fh.readline(1 << 20)
                yield lineno, None
            else:
                yield lineno, line


def split_jsonl(path: Path, out_dir: Path, max_bytes: int = MAX_BYTES, stats: Stats | None = None) -> list[dict]:
    """Group `{"repo","path","content"}` records by repository into out_dir/<key>.jsonl. A record
    whose content is over `max_bytes` (or whose line is too long to hold one) is counted as
    `too_large` in `stats` and not kept."""
    stats = stats if stats is not None else Stats()
    groups: dict[str, dict[str, str]] = {}
    # a file of max_bytes is at most 6 x as long in JSON (\u00XX escapes), plus the other fields
    for lineno, line in bounded_lines(path, 6 * max_bytes + 65536):
        if line is None:
            stats.drop("too_large")
            continue
        if not line.strip():
            continue
        try:
            # bytes that are not UTF-8 become lone surrogates, as in a file name from the disk:
            # such a path is dropped by the filters (a record, not the whole input, is bad)
            rec = json.loads(line.decode("utf-8", "surrogateescape"))
            repo, rel, content = str(rec["repo"]), str(rec["path"]).lstrip("/"), rec["content"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:   # RecursionError: nested too deep
            raise ValueError(f"{path}:{lineno}: expected a JSON object with repo, path, content ({exc})") from None
        if not (language_of(rel) and isinstance(content, str)):
            continue
        if len(content.encode("utf-8", "surrogatepass")) > max_bytes:
            stats.drop("too_large")
            continue
        groups.setdefault(repo, {})[rel] = content
    out_dir.mkdir(parents=True, exist_ok=True)
    repos = []
    for repo in sorted(groups):
        files = groups[repo]
        with atomic_file(out_dir / f"{repo_key(repo)}.jsonl") as fh:
            for rel in sorted(files):
                fh.write(json.dumps({"path": rel, "content": files[rel]}) + "\n")
        repos.append({"repo": repo, "jsonl": str(out_dir / f"{repo_key(repo)}.jsonl"),
                      "files": [(rel, len(files[rel].encode("utf-8", "surrogatepass"))) for rel in sorted(files)]})
    return repos


def read_file(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> tuple[bytes | None, str | None]:
    """(contents, None), or (None, why not): `too_large` is decided from the size before reading
    and never more than `max_bytes` + 1 bytes are read (a file may grow meanwhile); a file that is
    no longer a regular file (a link, a pipe that would block, a device) or cannot be read is
    `unreadable`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, "unreadable"
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "unreadable"
        if st.st_size > max_bytes:
            return None, "too_large"
        try:
            data = fh.read(max_bytes + 1)
        except OSError:
            return None, "unreadable"
    return (None, "too_large") if len(data) > max_bytes else (data, None)


def read_repository(entry: dict, max_bytes: int = MAX_BYTES) -> Iterator[Document]:
    """The planned files of one repository as raw (undecoded) documents, in path order, one at a
    time. A file that cannot be used has no data and says why in meta["drop"]."""
    repo = entry["repo"]
    wanted = [f[0] for f in entry["files"]]
    if "jsonl" in entry:
        by_path = {}
        with open(entry["jsonl"], encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                by_path[rec["path"]] = rec["content"]
        for p in wanted:
            if p in by_path:
                yield Document(repo, p, language=language_of(p), data=by_path.pop(p).encode("utf-8", "surrogatepass"))
        return
    root = Path(entry["root"])
    for rel in wanted:
        data, reason = read_file(root / rel, max_bytes)
        yield Document(repo, rel, language=language_of(rel), data=data, meta={"drop": reason} if reason else {})
