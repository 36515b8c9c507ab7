"""Cross-file context for inference: which other files of a repository to put before the current one.

Training packs a repository in `order_repository` order, so files a file imports (and files close
to it in the import graph) precede it inside one example. At inference we rebuild the same graph
and pick the files the current file would have seen: first the files it depends on, nearest first
(its imports, then theirs), then the rest by undirected graph distance (files importing it, their
other imports, ...), then its unit test / implementation partner, then files of the same
directory; within the budget, returned in packing order so the prompt looks like training data
(`render_fim(..., context=...)` joins them with file separators).

`repository_context` does it for a file on disk: it finds the repository (checkout.py), reads its
source files within bounds, and budgets in tokens as the prompt will spend them.
"""

from __future__ import annotations

import os
import posixpath
from typing import Callable, Iterable

import numpy as np

from codegemma.fim.format import render_file

from .algorithms import Graph
from .checkout import MAX_BYTES, MAX_FILES, read_repository, repository_path
from .graph import build_graph, implementation_for_test
from .imports import ImportParser
from .order import order_repository


def _as_dict(repo_files) -> dict[str, str]:
    if isinstance(repo_files, dict):
        return dict(repo_files)
    return {p: t for p, t in repo_files}


def related_files(repo_files: dict[str, str] | Iterable[tuple[str, str]], current_path: str,
                  budget: int, cost: Callable[[str, str], int] | None = None,
                  package: str | None = None, imports: ImportParser | None = None,
                  max_chars_per_unit: float | None = None) -> list[str]:
    """Paths of the files to show as context for `current_path`, in packing order.

    repo_files: path -> text (the current file may be among them; it is never returned).
    budget: total cost allowed; `cost(path, text)` defaults to len(path) + len(text) + 1
        (characters); pass a token counter to budget in tokens. Files too large for the
        remaining budget are skipped, smaller farther ones may still fit.
    package: the import name of the repository root if it is a package (a root `__init__.py`
        then answers to it). imports: the ImportParser to reuse (build_graph).
    max_chars_per_unit: when given, a file longer than this many characters per unit of the
        remaining budget is skipped without calling `cost` (a token counter is the expensive
        part in a large repository; no code averages 6 characters per token).
    """
    files = _as_dict(repo_files)
    if current_path not in files:
        files[current_path] = ""
    cost = cost or (lambda p, t: len(p) + len(t) + 1)
    graph = build_graph(files, package=package, imports=imports)
    paths = graph.paths
    pos = {p: i for i, p in enumerate(paths)}
    n = len(paths)
    dist = deps = np.full(n, np.inf)
    if graph.edges or graph.dropped:
        src = [pos[a] for a, _ in graph.edges] + [pos[a] for a, _ in graph.dropped]
        dst = [pos[b] for _, b in graph.edges] + [pos[b] for _, b in graph.dropped]
        g = Graph(n, np.asarray(src), np.asarray(dst))
        dist = g.distances_from(pos[current_path])
        deps = g.distances_from(pos[current_path], directed=True)    # along imports only

    partner_names = set()
    impl = implementation_for_test(current_path)
    if impl:
        partner_names.add(impl)
    here = posixpath.dirname(current_path)

    def rank(p: str):
        i = pos[p]
        is_partner = posixpath.basename(p) in partner_names or implementation_for_test(p) == posixpath.basename(current_path)
        return (deps[i], dist[i], not is_partner, posixpath.dirname(p) != here, p)

    chosen, left = set(), budget
    for p in sorted((p for p in paths if p != current_path), key=rank):
        if max_chars_per_unit and len(files[p]) > left * max_chars_per_unit:
            continue
        c = cost(p, files[p])
        if c <= left:
            chosen.add(p)
            left -= c
        if left <= 0:
            break
    return [p for p in order_repository(files, graph) if p in chosen]


# A file longer than this many characters per token left in the budget is not tokenised to find
# out that it does not fit: code averages 3-4 characters per token.
_MAX_CHARS_PER_TOKEN = 6.0


def repository_context(current_file: str | os.PathLike, budget_tokens: int,
                       count_tokens: Callable[[str], int], *, text: str | None = None,
                       max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> list[tuple[str, str]]:
    """(path relative to the repository root, text) of the files to put ahead of `current_file`
    in a completion prompt, in packing order; [] outside a repository (repository_path gives
    the current file's own relative path).

    The files it depends on come first, nearest first (related_files), whole files only, as long
    as they fit `budget_tokens` (give it fim.prompt.PromptBuilder.context_room). A file costs
    what the prompt builder spends on it: its path line, its text and one <|file_separator|>;
    `count_tokens(text)` counts plain text (`len(tok.encode(text, parse_special=False))`).
    `text`: the current file as the editor holds it (unsaved changes), else it is read from disk.
    max_files / max_bytes bound the reading (checkout.read_repository).
    """
    found = repository_path(current_file)
    if found is None or budget_tokens <= 0:
        return []
    root, path = found
    files = read_repository(root, current_file, max_files=max_files, max_bytes=max_bytes)
    if text is not None:
        files[path] = text
    chosen = related_files(files, path, budget_tokens,
                           cost=lambda p, t: count_tokens(render_file(p, "")) + count_tokens(t) + 1,
                           max_chars_per_unit=_MAX_CHARS_PER_TOKEN)
    return [(p, files[p]) for p in chosen]
