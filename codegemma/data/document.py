"""Documents, pipeline steps and the statistics that say why anything was dropped.

A step (datatrove style, our own code) takes an iterator of documents and yields the documents it
keeps, possibly modified; it records in `Stats` why it dropped or changed anything. A pipeline is
a list of steps applied in order (`run_steps`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator


@dataclass
class Document:
    repo: str                      # repository name, e.g. "stdlib" or "site-packages/numpy"
    path: str                      # POSIX path inside the repository
    text: str = ""                 # decoded text (empty until decoded)
    language: str | None = None    # from the file name (codegemma.repo.languages)
    data: bytes | None = None      # raw bytes as read (dropped once decoded)
    meta: dict = field(default_factory=dict)


class Stats:
    """Counters: `dropped/<reason>`, `changed/<what>`, `count/<what>`; summable across tasks."""

    def __init__(self, counts: dict | None = None):
        self.counts: Counter = Counter(counts or {})

    def drop(self, reason: str, n: int = 1) -> None:
        self.counts[f"dropped/{reason}"] += n

    def changed(self, what: str, n: int = 1) -> None:
        self.counts[f"changed/{what}"] += n

    def add(self, what: str, n: int = 1) -> None:
        self.counts[f"count/{what}"] += n

    def merge(self, other: "Stats | dict") -> "Stats":
        self.counts.update(other.counts if isinstance(other, Stats) else other)
        return self

    def to_dict(self) -> dict:
        return {k: int(v) for k, v in sorted(self.counts.items())}

    def dropped(self) -> dict:
        return {k.split("/", 1)[1]: v for k, v in self.to_dict().items() if k.startswith("dropped/")}


Step = Callable[[Iterable[Document], Stats], Iterator[Document]]


def run_steps(steps: list[Step], docs: Iterable[Document], stats: Stats) -> Iterator[Document]:
    """Chain the steps lazily: documents stream through all of them one at a time."""
    for step in steps:
        docs = step(docs, stats)
    return iter(docs)


class FilterStep:
    """A step from a predicate: `check(doc) -> reason | None` (None keeps the document)."""

    def __init__(self, name: str, check: Callable[[Document], str | None]):
        self.name = name
        self.check = check

    def __call__(self, docs: Iterable[Document], stats: Stats) -> Iterator[Document]:
        for doc in docs:
            reason = self.check(doc)
            if reason is None:
                yield doc
            else:
                stats.drop(reason)
