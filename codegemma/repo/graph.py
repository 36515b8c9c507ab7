"""A repository's file dependency graph: imports resolved to files, weighted, made acyclic.

Resolution (paper: "suffix-matching, keeping the longest match"): an import's candidate module
path and a file's module path match when one is a path-suffix of the other (so `numpy.linalg.linalg`
finds `linalg/linalg.py` in a repository rooted at the numpy package, and `util` finds `src/util.py`);
the match length is the number of shared trailing components. The longest match wins; ties go to
the file sharing the longest directory prefix with the importer, then to the lexicographically
first path. Explicitly relative imports (`from . import x`, `./x`, `#include "x.h"`, `mod x;`) must
match exactly. Directory imports (Go packages, Java wildcards, C# namespaces) link to every file
of the best-matching directory.

Edge importance (the paper's heuristic is undisclosed; ours):
    weight = confidence * (1 + log2(1 + uses)) / fan_out
  - confidence: 1.0 for relative imports, else min(match_len, 3) / 3 (a one-component suffix
    match such as `import path` -> `path.py` may well be a different module of the same name);
  - uses: how often the bound name occurs in the file after its header (an import used 20 times is
    a stronger dependency than one used once);
  - fan_out: number of files a directory import links to (importing a package of 10 files
    spreads its importance).
Cycles are broken by repeatedly dropping, inside every strongly connected component, the
lightest edge (ties: the lexicographically last (importer, imported) pair) until none is left.
"""

from __future__ import annotations

import math
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .algorithms import Graph
from .imports import TOP_LINES, Import, ImportParser, header_end
from .languages import language_of, module_keys


def _common_suffix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b)):
        if x != y:
            break
        n += 1
    return n


def _common_prefix_len(a: str, b: str) -> int:
    pa, pb = a.split("/"), b.split("/")
    n = 0
    for x, y in zip(pa, pb):
        if x != y:
            break
        n += 1
    return n


class PathIndex:
    """Lookup structures over a repository's file paths for suffix-matching imports."""

    def __init__(self, paths, package: str | None = None):
        """`package`: the name the repository root is imported as, when its root is a package
        (e.g. "numpy" for site-packages/numpy): a root `__init__.py` then answers to it."""
        self.paths = sorted(paths)
        self.by_last: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
        self.dirs: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        self.files_in_dir: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for p in self.paths:
            keys = module_keys(p)
            if package and p == "__init__.py":
                keys = ((package,),) + keys
            for key in keys:
                if key:
                    self.by_last[key[-1]].append((key, p))
            d = tuple(x for x in posixpath.dirname(p).split("/") if x)
            if d and d not in self.files_in_dir:
                self.dirs[d[-1]].append(d)
            self.files_in_dir[d].append(p)

    def resolve(self, importer: str, imp: Import) -> tuple[list[str], int]:
        """Files `imp` (found in `importer`) refers to, and the match length (0 = unresolved)."""
        if imp.is_dir:
            return self._resolve_dir(importer, imp)
        best: tuple | None = None
        for rank, cand in enumerate(imp.candidates):
            if not cand:
                continue
            for key, path in self.by_last.get(cand[-1], ()):
                if path == importer:
                    continue
                n = _common_suffix(key, cand)
                if imp.relative and key != cand:
                    continue
                if n < min(len(key), len(cand)):
                    continue
                ext_ok = (not imp.ext) or posixpath.splitext(path)[1].lower() == imp.ext
                score = (n, ext_ok, -rank, _common_prefix_len(importer, path))
                if best is None or score > best[0] or (score == best[0] and path < best[1]):
                    best = (score, path)
        if best is None:
            return [], 0
        return [best[1]], best[0][0]

    def _resolve_dir(self, importer: str, imp: Import) -> tuple[list[str], int]:
        lang = language_of(importer)
        best: tuple | None = None
        for cand in imp.candidates:
            for d in self.dirs.get(cand[-1], ()):
                n = _common_suffix(d, cand)
                if n < min(len(d), len(cand)):
                    continue
                score = (n, _common_prefix_len(importer, "/".join(d)))
                if best is None or score > best[0] or (score == best[0] and d < best[1]):
                    best = (score, d)
        if best is None:
            return [], 0
        files = [p for p in self.files_in_dir[best[1]]
                 if p != importer and language_of(p) == lang and not is_test_file(p)]
        return files, best[0][0]


@dataclass
class DependencyGraph:
    """Files (sorted paths) and weighted import edges `(importer, imported) -> weight`."""

    paths: list[str]
    edges: dict[tuple[str, str], float]
    dropped: dict[tuple[str, str], float] = field(default_factory=dict)   # removed to break cycles

    def covered(self) -> list[str]:
        """Files with at least one kept edge, in sorted order."""
        seen = {p for e in self.edges for p in e}
        return [p for p in self.paths if p in seen]


def _count_uses(text: str, name: str, start: int) -> int:
    if not name or len(name) < 2:
        return 0
    return text.count(name, start)


def build_graph(files: dict[str, str], top_lines: int = TOP_LINES, package: str | None = None,
                imports: ImportParser | None = None) -> DependencyGraph:
    """The import graph of one repository (`files`: path -> text), with cycles broken.

    `package`: the import name of the repository root if it is a package (see PathIndex).
    `imports`: the parser to use (one is made when not given; reuse one across repositories)."""
    index = PathIndex(files, package)
    parser = imports or ImportParser()
    edges: dict[tuple[str, str], float] = defaultdict(float)
    for path in index.paths:
        text = files[path]
        found = parser.imports(path, text, top_lines)
        if not found:
            continue
        end = header_end(text, top_lines)
        for imp in found:
            targets, match_len = index.resolve(path, imp)
            if not targets:
                continue
            confidence = 1.0 if imp.relative else min(match_len, 3) / 3.0
            uses = _count_uses(text, imp.name, end)
            weight = confidence * (1.0 + math.log2(1 + uses)) / len(targets)
            for t in targets:
                if t != path:
                    edges[(path, t)] += weight
    kept, dropped = break_cycles(index.paths, dict(edges))
    return DependencyGraph(index.paths, kept, dropped)


def break_cycles(paths: list[str], edges: dict[tuple[str, str], float]):
    """Drop the lightest edge of every strongly connected component until the graph is a DAG."""
    pos = {p: i for i, p in enumerate(paths)}          # paths are sorted: index order = lexicographic
    pairs = list(edges)
    src = np.fromiter((pos[a] for a, _ in pairs), dtype=np.int64, count=len(pairs))
    dst = np.fromiter((pos[b] for _, b in pairs), dtype=np.int64, count=len(pairs))
    w = np.fromiter((edges[e] for e in pairs), dtype=np.float64, count=len(pairs))
    alive = np.ones(len(pairs), dtype=bool)
    while alive.any():
        a = np.flatnonzero(alive)
        labels = Graph(len(paths), src[a], dst[a]).strong_components()
        sizes = np.bincount(labels)
        lab = labels[src[a]]
        inner = a[(lab == labels[dst[a]]) & (sizes[lab] > 1)]
        if inner.size == 0:
            break
        # per component, the lightest edge; among equals the lexicographically last (importer, imported)
        order = np.lexsort((-dst[inner], -src[inner], w[inner], labels[src[inner]]))
        first = np.concatenate(([True], np.diff(labels[src[inner]][order]) != 0))
        alive[inner[order][first]] = False
    kept = {pairs[i]: float(w[i]) for i in np.flatnonzero(alive)}
    dropped = {pairs[i]: float(w[i]) for i in np.flatnonzero(~alive)}
    return kept, dropped


# ---- unit tests and their implementations -------------------------------------------------------

def implementation_for_test(path: str) -> str | None:
    """The file name of the implementation a unit-test file tests, or None if not a test file.

    test_foo.py / foo_test.py -> foo.py; TestFoo.java / FooTest.java / FooTests.java -> Foo.java
    (same for .kt, .cs); foo_test.go -> foo.go; foo.test.ts / foo.spec.ts -> foo.ts;
    test_foo.c / foo_test.cc -> foo.c / foo.cc; foo_test.rs -> foo.rs.
    """
    name = posixpath.basename(path)
    stem, ext = posixpath.splitext(name)
    lang = language_of(path)
    if lang is None:
        return None
    for marker in (".test", ".spec"):
        if stem.endswith(marker) and len(stem) > len(marker):
            return stem[: -len(marker)] + ext
    if lang in ("java", "kotlin", "c_sharp"):
        if stem.startswith("Test") and len(stem) > 4 and stem[4].isupper():
            return stem[4:] + ext
        for suffix in ("Tests", "Test"):
            if stem.endswith(suffix) and len(stem) > len(suffix):
                return stem[: -len(suffix)] + ext
        return None
    if stem.startswith("test_") and len(stem) > 5:
        return stem[5:] + ext
    if stem.endswith("_test") and len(stem) > 5:
        return stem[:-5] + ext
    return None


def is_test_file(path: str) -> bool:
    return implementation_for_test(path) is not None
