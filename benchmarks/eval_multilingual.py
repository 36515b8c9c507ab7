"""Multilingual evaluation time on this machine: the canonical self-test of a suite, and an
`eval run` of the built-in model (generation, then scoring) on one multilingual benchmark.

Part 1 scores every reference solution of each benchmark in the suite (what `codegemma eval
score --suite multilingual --canonical` does), after preparing the toolchain support folders
(timed apart: once per machine). Part 2 loads codegemma-nano, generates one greedy sample per
task with `eval run`'s generation code and scores it. Prints tables and records them in
benchmarks/RESULTS.md under "Multilingual evaluation time". No peer: the upstream harnesses
(CodeGeeX's, MxEval's) run samples without isolation and need network installs.

    python benchmarks/eval_multilingual.py --suite multilingual --model-benchmark humaneval-x-cpp
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from results_md import record  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent


def canonical(suite: str, data_dir: str, workers: int, out: Path | None) -> list[str]:
    from codegemma.eval import harness, toolchains
    from codegemma.eval.registry import KNOWN_BAD_REFERENCES, get_benchmark, suite_benchmarks

    rows, total, prepared = [], 0.0, 0.0
    for name in suite_benchmarks(suite):
        bench = get_benchmark(name)
        why = bench.runnable()
        if why:
            rows.append(f"| {name} | - | - | - | - | not run: {why} |")
            continue
        t0 = time.perf_counter()
        toolchains.support_dir(bench.language)
        prep = time.perf_counter() - t0
        problems = bench.problems(data_dir)
        samples = [{"task_id": p.task_id, "completion": p.canonical_solution}
                   for p in problems if p.canonical_solution is not None]
        t0 = time.perf_counter()
        results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s,
                                workers=workers, progress=False) if samples else []
        seconds = time.perf_counter() - t0
        total, prepared = total + seconds, prepared + prep
        if out is not None:
            harness.write_jsonl(out / f"{name}.jsonl", results)
        failed = [r["task_id"] for r in results if not r["passed"]]
        unexpected = [t for t in failed if t not in KNOWN_BAD_REFERENCES.get(name, {})]
        rate = f"{len(samples) / seconds:.2f}" if samples else "-"
        note = f"unexpected: {', '.join(unexpected[:8])}" if unexpected else ""
        rows.append(f"| {name} | {len(samples)} ({len(problems) - len(samples)} without) | "
                    f"{len(samples) - len(failed)} | {seconds:.0f} | {rate} | "
                    f"{f'prepare {prep:.0f} s; ' if prep > 1 else ''}{note} |")
        print(rows[-1], flush=True)
    return (["| benchmark | references (tasks without) | passing | seconds | samples/s | notes |",
             "|---|---:|---:|---:|---:|---|"] + rows +
            ["", f"scoring total: {total / 60:.1f} min, plus {prepared:.0f} s preparing the "
                 "toolchain support folders (once per machine)"])


def model_run(name: str, data_dir: str, workers: int, max_new_tokens: int) -> list[str]:
    import codegemma
    from codegemma.eval import harness
    from codegemma.eval.generate import generate_samples
    from codegemma.eval.registry import get_benchmark
    from codegemma.models import resolve_model

    bench = get_benchmark(name)
    problems = bench.problems(data_dir)
    t0 = time.perf_counter()
    model = codegemma.load(resolve_model(None), device="cpu")
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        t0 = time.perf_counter()
        generate_samples(model, bench, problems, path, max_new_tokens=max_new_tokens)
        gen_s = time.perf_counter() - t0
        model.close()
        samples = harness.read_samples(path)
    t0 = time.perf_counter()
    results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s,
                            workers=workers, progress=False)
    score_s = time.perf_counter() - t0
    passed = sum(r["passed"] for r in results)
    return ["| benchmark | tasks | load s | generate s | score s | total s | pass@1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| {name} | {len(problems)} | {load_s:.1f} | {gen_s:.0f} | {score_s:.0f} | "
            f"{load_s + gen_s + score_s:.0f} | {passed / len(results):.3f} |"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="multilingual")
    ap.add_argument("--model-benchmark", default="humaneval-x-cpp")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--data-dir", default=os.environ.get("CODEGEMMA_DATA_DIR",
                                                          str(REPO.parent / "shared" / "benchmarks")))
    ap.add_argument("--out", help="write each benchmark's results here (to inspect failures)")
    ap.add_argument("--skip-canonical", action="store_true")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--no-results", action="store_true", help="do not record in RESULTS.md")
    args = ap.parse_args()

    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    device = f"{platform.machine()}, {os.cpu_count()} CPUs (no GPU)"
    lines = [f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {device}; "
             f"{args.workers} workers; load average at start {load:.1f}", ""]
    if not args.skip_canonical:
        lines += [f"Canonical self-test, suite `{args.suite}` "
                  f"(`codegemma eval score --suite {args.suite} --canonical`):", ""]
        lines += canonical(args.suite, args.data_dir, args.workers, out) + [""]
    if not args.skip_model:
        lines += [f"codegemma-nano, greedy, {args.max_new_tokens} new tokens, one sample per task "
                  f"(`codegemma eval run --benchmark {args.model_benchmark}`):", ""]
        lines += model_run(args.model_benchmark, args.data_dir, args.workers,
                           args.max_new_tokens) + [""]
    lines.append(f"load average at the end {os.getloadavg()[0]:.1f}")
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        record("Multilingual evaluation time", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
