"""The order in which a repository's files are packed (and offered as inference context).

1. Dependency part (paper's heuristic A): files covered by the acyclic import graph, in a
   topological order where each file comes after the files it imports. At each step the next file
   is the available one (all its imports placed) with the smallest shortest-path distance (edges
   taken as undirected, unit length) to any file already placed; ties, including the very first
   pick and every jump to an unconnected component, go to the lexicographically first path.
   The all-pairs distances are computed lazily, one row per placed file (each row exactly once),
   so memory stays O(files) for repositories with thousands of files.
2. Lexical part (heuristic B): files the graph does not cover, alphabetically.
3. Unit tests not placed by the graph are moved to sit right after their implementation
   (`test_foo.py` after `foo.py`, `TestFoo.java` after `Foo.java`), wherever that is.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

import numpy as np

from .algorithms import Graph
from .graph import DependencyGraph, build_graph, implementation_for_test
from .imports import ImportParser


def dependency_order(graph: DependencyGraph) -> list[str]:
    """Topological order of the covered files, nearest-first as described in the module doc."""
    nodes = graph.covered()
    if not nodes:
        return []
    pos = {p: i for i, p in enumerate(nodes)}
    n = len(nodes)
    pending = np.zeros(n, dtype=np.int64)           # imports of node i not yet placed
    importers = defaultdict(list)                   # j -> nodes importing j
    src, dst = [], []
    for a, b in graph.edges:
        i, j = pos[a], pos[b]
        pending[i] += 1
        importers[j].append(i)
        src.append(i)
        dst.append(j)
    adj = Graph(n, np.asarray(src), np.asarray(dst))
    dist = np.full(n, np.inf)                       # distance to the nearest placed node
    placed = np.zeros(n, dtype=bool)
    order = []
    for _ in range(n):
        avail = np.flatnonzero((pending == 0) & ~placed)
        # argmin returns the first minimum: indices follow sorted paths, so ties are lexicographic
        v = int(avail[np.argmin(dist[avail])])
        placed[v] = True
        order.append(nodes[v])
        np.minimum(dist, adj.distances_from(v), out=dist)
        for u in importers[v]:
            pending[u] -= 1
    return order


def _find_implementation(test_path: str, impl_name: str, by_name: dict[str, list[str]]) -> str | None:
    cands = by_name.get(impl_name, [])
    if not cands:
        return None
    test_dir = posixpath.dirname(test_path)
    stripped = "/".join(p for p in test_dir.split("/") if p not in ("test", "tests", "testing", "__tests__"))

    def rank(c):
        # same directory, then the directory with test folders removed, then the longest shared
        # directory prefix, then lexicographic
        d = posixpath.dirname(c)
        shared = len(posixpath.commonprefix([d.split("/"), test_dir.split("/")]))
        return (d != test_dir, d != stripped, -shared, c)
    return min(cands, key=rank)


def place_tests(order: list[str], movable: set[str]) -> list[str]:
    """Move each test in `movable` right after its implementation (if that is in `order`)."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for p in order:
        by_name[posixpath.basename(p)].append(p)
    attached: dict[str, list[str]] = defaultdict(list)
    moved = set()
    for p in sorted(movable):
        impl_name = implementation_for_test(p)
        impl = _find_implementation(p, impl_name, by_name) if impl_name else None
        if impl and impl != p and impl not in movable:
            attached[impl].append(p)
            moved.add(p)
    out = []
    for p in order:
        if p in moved:
            continue
        out.append(p)
        out.extend(attached.get(p, ()))
    return out


def order_repository(files: dict[str, str], graph: DependencyGraph | None = None,
                     package: str | None = None, imports: ImportParser | None = None) -> list[str]:
    """The packing order of a repository's files (`files`: path -> text).

    `package`, `imports`: as for build_graph (the repository root's import name; the parser)."""
    graph = graph or build_graph(files, package=package, imports=imports)
    dep = dependency_order(graph)
    in_graph = set(dep)
    lexical = sorted(p for p in files if p not in in_graph)
    movable = {p for p in lexical if implementation_for_test(p)}
    return place_tests(dep + lexical, movable)
