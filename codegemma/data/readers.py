"""Where documents come from: repository trees, JSON lines, or this Python's own libraries.

`plan_sources(input)` lists every repository and its candidate files (path, size) once, in sorted
order; the plan is saved with the run so a resumed run reads exactly the same files.

- A directory whose subdirectories are repositories (plain trees or git checkouts). Files at its
  top level are ignored. Directories of VCS metadata, vendored code, caches, build output, hidden
  ones and package metadata (codegemma.repo.languages.skip_dir) are not entered; symbolic links
  are not followed. The same rules pick the files of a repository used as completion context
  (codegemma.repo.checkout).
- A `.jsonl` / `.jsonl.gz` file of `{"repo", "path", "content"}` records; it is split into one
  file per repository under the work directory first (`split_jsonl`).
- No input: the running Python's standard library (repository "stdlib") and each top-level entry
  of site-packages ("site-packages/<name>").
Only files whose name gives a supported language (codegemma.repo.languages) are listed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import site
import sysconfig
from pathlib import Path

from codegemma.repo.languages import language_of, skip_dir

from .document import Document


def repo_key(name: str) -> str:
    """A file-system-safe, collision-free key for a repository name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def list_tree(root: Path) -> list[tuple[str, int]]:
    """(relative POSIX path, size) of the supported source files under `root`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not skip_dir(d))
        for name in filenames:
            if language_of(name) is None:
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            out.append((rel, os.path.getsize(full)))
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


def plan_sources(input_path: str | None, work_dir: Path) -> list[dict]:
    """One entry per repository: {"repo", "root" | "jsonl", "files": [[path, size], ...]}, by name."""
    if input_path is None:
        repos = []
        for name, root in default_roots():
            files = [(root.name, root.stat().st_size)] if root.is_file() else list_tree(root)
            repos.append({"repo": name, "root": str(root.parent if root.is_file() else root), "files": files})
    else:
        p = Path(input_path)
        if not p.exists():
            raise FileNotFoundError(f"--input {p}: no such file or directory")
        if p.is_file():
            if not p.name.endswith((".jsonl", ".jsonl.gz", ".json")):
                raise ValueError(f"--input {p}: expected a directory of repositories or a .jsonl(.gz) file")
            repos = split_jsonl(p, work_dir / "input")
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


def split_jsonl(path: Path, out_dir: Path) -> list[dict]:
    """Group `{"repo","path","content"}` records by repository into out_dir/<key>.jsonl."""
    opener = gzip.open if path.name.endswith(".gz") else open
    groups: dict[str, dict[str, str]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                repo, rel, content = str(rec["repo"]), str(rec["path"]).lstrip("/"), rec["content"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with repo, path, content ({exc})") from None
            if language_of(rel) and isinstance(content, str):
                groups.setdefault(repo, {})[rel] = content
    out_dir.mkdir(parents=True, exist_ok=True)
    repos = []
    for repo in sorted(groups):
        files = groups[repo]
        target = out_dir / f"{repo_key(repo)}.jsonl"
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rel in sorted(files):
                fh.write(json.dumps({"path": rel, "content": files[rel]}) + "\n")
        os.replace(tmp, target)
        repos.append({"repo": repo, "jsonl": str(target),
                      "files": [(rel, len(files[rel].encode("utf-8", "surrogatepass"))) for rel in sorted(files)]})
    return repos


def read_repository(entry: dict) -> list[Document]:
    """The planned files of one repository as raw (undecoded) documents, in path order."""
    repo = entry["repo"]
    wanted = [f[0] for f in entry["files"]]
    if "jsonl" in entry:
        by_path = {}
        with open(entry["jsonl"], encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                by_path[rec["path"]] = rec["content"].encode("utf-8", "surrogatepass")
        return [Document(repo, p, language=language_of(p), data=by_path[p]) for p in wanted if p in by_path]
    root = Path(entry["root"])
    docs = []
    for rel in wanted:
        try:
            data = (root / rel).read_bytes()
        except OSError:      # vanished since planning: treated as unreadable, counted by the caller
            data = None
        docs.append(Document(repo, rel, language=language_of(rel), data=data))
    return docs
