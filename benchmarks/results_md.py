"""Record a benchmark run in benchmarks/RESULTS.md: one `## section` per benchmark, runs in date order.

Every script in benchmarks/ calls `record(section, entry)` instead of appending by itself, so a
rerun lands at the end of its own section rather than in a second copy of it at the end of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")


def record(section: str, entry: str, path: str | os.PathLike = RESULTS) -> None:
    """Add `entry` (markdown) at the end of `## section`, creating the section at the end if absent."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    heading = f"\n## {section}\n"
    if heading not in text:
        text = text.rstrip("\n") + "\n" + heading
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end
    text = text[:end].rstrip("\n") + "\n\n" + entry.strip("\n") + "\n" + text[end:]
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
