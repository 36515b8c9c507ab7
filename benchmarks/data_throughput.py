"""Data pipeline throughput vs plain tokenising (the floor every pipeline pays).

Both sides read the same slice of the default corpus (this Python's site-packages + stdlib, first
--limit-mb MB of source by repository name) and use the same tokenizer (a 16k byte-fallback BPE
trained here with codegemma.tokenizer.train_bpe_tokenizer on the first 8 MB):
  - peer: `tokenizers` encode_batch of the decoded file texts, one thread (TOKENIZERS_PARALLELISM
    =false), i.e. MB/s per core;
  - ours: `codegemma data prepare` end to end (read, filter, decontaminate, PII, MinHash, global
    dedup, dependency ordering, tree-sitter FIM, tokenise, pack, write shards), with --workers 1
    and 2; MB/s per worker = source MB read / wall seconds / workers. Also MB per CPU-second
    (this process + its worker processes), which stays meaningful when other jobs share the cores.
    With --fim-passes 1 3, each worker count also runs with 3 FIM passes (3 renderings of the train
    split: the same source MB, about 3x the tokens), to show what the extra passes cost.
Prints a table and appends it to benchmarks/RESULTS.md under "Data pipeline throughput".

    python benchmarks/data_throughput.py --limit-mb 30
    python benchmarks/data_throughput.py --limit-mb 16 --workers 2 --fim-passes 1 3
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"   # before tokenizers is imported: one thread per process

import argparse
import datetime
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from results_md import record  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (worker pools are reaped at
    shutdown). Unlike wall time it does not grow when other jobs share the cores."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-mb", type=float, default=30.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--fim-passes", type=int, nargs="+", default=[1], help="FIM passes to run (default 1)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="data_bench_"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    from codegemma.data.corpus import corpus_texts
    from codegemma.data.document import Stats, run_steps
    from codegemma.data.executors import ExecutorConfig
    from codegemma.data.filters import FilterConfig, decode_step
    from codegemma.data.prepare import PrepareConfig, Preparation
    from codegemma.data.readers import limit_plan, plan_sources, read_repository
    from codegemma.tokenizer import Tokenizer, save_tokenizer_files, train_bpe_tokenizer

    t0 = time.perf_counter()
    tok_dir = tmp / "tok"
    save_tokenizer_files(train_bpe_tokenizer(corpus_texts(None, limit_mb=8), 16384), tok_dir)
    print(f"tokenizer trained in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    # the peer: decode the same planned files, then one batch-tokenising pass
    plan = limit_plan(plan_sources(None, tmp / "plan"), args.limit_mb)
    stats = Stats()
    texts = [d.text for e in plan for d in run_steps([decode_step(FilterConfig())], read_repository(e), stats)]
    source_mb = stats.counts["count/bytes_read"] / 1e6
    tok = Tokenizer.load(tok_dir)
    t, c = time.perf_counter(), cpu_seconds()
    for lo in range(0, len(texts), 1024):
        tok.encode_batch(texts[lo:lo + 1024])
    tok_s, tok_cpu = time.perf_counter() - t, cpu_seconds() - c
    peer, peer_cpu = source_mb / tok_s, source_mb / tok_cpu

    rows = []
    for w in args.workers:
        for n in args.fim_passes:
            out = tmp / f"out{w}-{n}"
            prep = Preparation(PrepareConfig(out=str(out), tokenizer=str(tok_dir), limit_mb=args.limit_mb,
                                             fim_passes=n), ExecutorConfig(workers=w))
            t, c = time.perf_counter(), cpu_seconds()
            manifest = prep.run()
            wall, cpu = time.perf_counter() - t, cpu_seconds() - c
            read_mb = manifest["stats"]["count/bytes_read"] / 1e6
            per_worker = read_mb / wall / w
            rows.append((w, n, wall, per_worker, per_worker / peer, dict(prep.timings), manifest, cpu,
                         read_mb / cpu))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU only)"
    lines = [
        f"### Data pipeline throughput ({now}; {device})",
        "",
        f"Corpus: first {args.limit_mb:g} MB of the default corpus (site-packages + stdlib), "
        f"{source_mb:.1f} MB of source files; tokenizer: 16k byte-fallback BPE.",
        "",
        "| what | workers | FIM passes | train tokens | wall s | MB/s per worker (wall) | ratio | CPU s "
        "| MB per CPU-second | ratio (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| `tokenizers` encode_batch alone (peer, 1 thread) | 1 | | | {tok_s:.1f} | {peer:.2f} | 1.00 "
        f"| {tok_cpu:.1f} | {peer_cpu:.2f} | 1.00 |",
    ]
    for w, n, wall, pw, ratio, timings, m, cpu, per_cpu in rows:
        lines.append(f"| `codegemma data prepare` end to end | {w} | {n} | {m['splits']['train']['num_tokens']} "
                     f"| {wall:.1f} | {pw:.2f} | {ratio:.2f} | {cpu:.1f} | {per_cpu:.2f} | {per_cpu / peer_cpu:.2f} |")
    lines += ["", "Stage seconds (driver wall clock): " + "; ".join(
        f"workers={r[0]} passes={r[1]}: " + ", ".join(f"{k} {v:.1f}" for k, v in r[5].items()) for r in rows)]
    m = rows[0][6]
    lines += ["", f"Output: {m['splits']['train']['num_tokens'] + m['splits']['val']['num_tokens']} tokens; "
              "dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(m['dropped'].items())), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        record("Data pipeline throughput", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
