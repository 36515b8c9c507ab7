"""Graph algorithms on small integer graphs (nodes 0..n-1, edge arrays src -> dst).

scipy.sparse.csgraph does the work when it is installed (the data pipeline machine); a plain
Python version keeps inference-side users (related_files on a serving machine) free of that
dependency. Both give the same answers.
"""

from __future__ import annotations

from collections import deque

import numpy as np

try:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, shortest_path
except ImportError:          # serving machines may not have scipy: the fallbacks below apply
    csr_matrix = None


class Graph:
    """A directed graph; distances count edges of unit length, undirected unless asked."""

    def __init__(self, n: int, src: np.ndarray, dst: np.ndarray):
        self.n = int(n)
        self.src = np.asarray(src, dtype=np.int64)
        self.dst = np.asarray(dst, dtype=np.int64)
        self._csr = None
        self._adj: dict[bool, list[list[int]]] = {}
        if csr_matrix is not None:
            self._csr = csr_matrix((np.ones(self.src.size), (self.src, self.dst)), shape=(self.n, self.n))

    def distances_from(self, source: int, directed: bool = False) -> np.ndarray:
        """float64 [n]: hop counts from `source` (inf where unreachable), along edges src -> dst
        only when `directed`."""
        if self._csr is not None:
            return shortest_path(self._csr, directed=directed, unweighted=True, indices=int(source))
        if directed not in self._adj:
            adj = [[] for _ in range(self.n)]
            for a, b in zip(self.src.tolist(), self.dst.tolist()):
                adj[a].append(b)
                if not directed:
                    adj[b].append(a)
            self._adj[directed] = adj
        adj = self._adj[directed]
        dist = np.full(self.n, np.inf)
        dist[source] = 0
        queue = deque([int(source)])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if dist[v] == np.inf:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        return dist

    def strong_components(self) -> np.ndarray:
        """int [n]: a label per node; nodes share a label iff they are on a common directed cycle."""
        if self._csr is not None:
            return connected_components(self._csr, directed=True, connection="strong")[1]
        return _tarjan(self.n, self.src.tolist(), self.dst.tolist())


def _tarjan(n: int, src: list[int], dst: list[int]) -> np.ndarray:
    succ = [[] for _ in range(n)]
    for a, b in zip(src, dst):
        succ[a].append(b)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    labels = np.full(n, -1, dtype=np.int64)
    stack, counter, label = [], 0, 0
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, 0)]                      # iterative DFS: (node, next successor position)
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if index[w] < 0:
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    labels[w] = label
                    if w == v:
                        break
                label += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return labels
