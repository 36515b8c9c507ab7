"""Import parsing over a corpus, and repository context per completion request (CPU only).

1. `ImportParser.imports` (tree-sitter) over the files of the data benchmark's corpus slice (this
   Python's site-packages + stdlib, first --limit-mb MB, decoded as `data prepare` decodes them),
   against the peer the data pipeline is measured with: `tokenizers` encode_batch of the same
   texts (with the built-in model's tokenizer), one thread, in the same run. CPU seconds, so other
   jobs on the machine matter less.
2. `repository_context` for one file of a large tree (a copy of the stdlib with a `.git`, 30+ MB:
   the walk, reading, decoding, import graph, ranking and token counting, at the default bounds
   of repo/checkout.py), the latency a completion request pays.
Prints a table and records it in benchmarks/RESULTS.md under "Repository imports and context".

    python benchmarks/repo_context.py --limit-mb 30
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"   # before tokenizers is imported: one thread

import argparse
import datetime
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from results_md import record  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def cpu_and_wall(fn, repeat: int) -> tuple[float, float, object]:
    """The best CPU seconds and wall seconds of `repeat` calls, and the last result."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - c), min(best_wall, time.perf_counter() - w)
    return best_cpu, best_wall, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-mb", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    from codegemma.data.document import Stats, run_steps
    from codegemma.data.filters import FilterConfig, decode_step
    from codegemma.data.readers import limit_plan, plan_sources, read_repository
    from codegemma.models import resolve_model
    from codegemma.repo.checkout import MAX_BYTES, MAX_ENTRIES, MAX_FILES
    from codegemma.repo.context import repository_context
    from codegemma.repo.imports import ImportParser
    from codegemma.tokenizer import Tokenizer

    plan = limit_plan(plan_sources(None, Path(tempfile.mkdtemp(prefix="repo_bench_")) / "plan"), args.limit_mb)
    docs = [d for e in plan for d in run_steps([decode_step(FilterConfig())], read_repository(e), Stats())]
    mb = sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs) / 1e6
    tok = Tokenizer.load(resolve_model(None))
    texts = [d.text for d in docs]

    parser = ImportParser()
    imp_cpu, imp_wall, n_imports = cpu_and_wall(lambda: sum(len(parser.imports(d.path, d.text)) for d in docs),
                                                args.repeat)
    tok_cpu, tok_wall, _ = cpu_and_wall(lambda: [tok.encode_batch(texts[i:i + 1024], parse_special=False)
                                                 for i in range(0, len(texts), 1024)], args.repeat)

    # the stdlib as a repository: a copy with a .git directory (site-packages left out)
    work = Path(tempfile.mkdtemp(prefix="repo_bench_"))
    root = work / "stdlib"
    shutil.copytree(sysconfig.get_paths()["stdlib"], root, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
    (root / ".git").mkdir()
    count = lambda s: len(tok.encode(s, parse_special=False))
    try:
        ctx_cpu, ctx_wall, ctx = cpu_and_wall(lambda: repository_context(root / "json" / "decoder.py", 4000, count),
                                              args.repeat)
    finally:
        shutil.rmtree(work)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU only)"
    text = "\n".join([
        f"### Repository imports and context ({now}; {device})",
        "",
        f"Corpus: first {args.limit_mb:g} MB of the default corpus, {len(docs)} files, {mb:.1f} MB; "
        f"best of {args.repeat}.",
        "",
        "| what | CPU s | wall s | MB per CPU-second | ratio (CPU) |",
        "|---|---:|---:|---:|---:|",
        f"| `tokenizers` encode_batch of the same files (peer, 1 thread) | {tok_cpu:.2f} | {tok_wall:.2f} "
        f"| {mb / tok_cpu:.1f} | 1.00 |",
        f"| `ImportParser.imports` (tree-sitter), {n_imports} imports | {imp_cpu:.2f} | {imp_wall:.2f} "
        f"| {mb / imp_cpu:.1f} | {tok_cpu / imp_cpu:.1f} |",
        "",
        f"`repository_context(json/decoder.py, 4000 tokens)` in a copy of the stdlib at the default "
        f"bounds ({MAX_FILES} files, {MAX_BYTES / 1e6:g} MB, {MAX_ENTRIES} entries): {ctx_cpu:.2f} CPU s, "
        f"{ctx_wall:.2f} s wall per request; {len(ctx)} files chosen.",
        "",
    ])
    print(text)
    if not args.no_results:
        record("Repository imports and context", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
