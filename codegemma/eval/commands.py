"""`codegemma eval list|score|run`: benchmarks, scoring samples in the sandbox, model runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from codegemma.eval.sandbox import UNSAFE_FLAG
from codegemma.model.commands import add_allow_nonfinite
from codegemma.fim.format import MODES

RUN_OUTPUTS = ("samples.jsonl", "results.jsonl", "summary.json", "report.md", "pass_rate.png")


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="execution-based benchmarks (HumanEval, "
                                   "infilling, MBPP, eight languages) scored in a sandbox")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="the benchmarks, their sizes, whether their data and "
                       "toolchain are here")
    p.add_argument("--data-dir", help="benchmarks folder (default: $CODEGEMMA_DATA_DIR, cache)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("score", help="score a samples file, or the reference solutions "
                       "(--canonical: a self-test of the toolchains)")
    _common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--samples", help="JSON lines {task_id, completion}")
    what.add_argument("--canonical", action="store_true",
                      help="score the benchmark's own reference solutions (tasks without one "
                      "are skipped and counted)")
    p.add_argument("--out", help="write results.jsonl, summary.json, report.md there "
                   "(default with --samples: SAMPLES_results.jsonl only)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("run", help="generate with a model, score, and write a report")
    _common(p)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (HF format), or nano (default): the built-in codegemma-nano")
    p.add_argument("--out", required=True, help="output directory (a rerun with the same "
                   "model and settings resumes it)")
    p.add_argument("--overwrite", action="store_true", help="discard the samples already in "
                   "--out and start over (needed when the model or settings changed)")
    p.add_argument("--n-samples", type=int, default=1, help="samples per task (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature, 0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=128, help="most tokens generated per sample")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--limit", type=int, help="only the first N tasks (of each benchmark)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--fim-mode", choices=MODES, default="psm",
                   help="FIM prompt order for infilling benchmarks (default psm, as the report evaluates)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: the model's)")
    from codegemma.commands import add_quantize_args

    add_quantize_args(p)
    add_allow_nonfinite(p)
    p.set_defaults(func=cmd_run)


def _common(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--benchmark", help="benchmark name (see `codegemma eval list`)")
    which.add_argument("--suite", help="a set of benchmarks reported as one table: multilingual "
                       "(HumanEval and MBPP in eight languages), multilingual-humaneval, "
                       "multilingual-mbpp")
    p.add_argument("--data-dir", help="benchmarks folder (default: $CODEGEMMA_DATA_DIR, the "
                   "cache ~/.cache/codegemma/benchmarks, else download once)")
    p.add_argument("--k", default="1,10,100", help="pass@k values (default 1,10,100; each "
                   "reported only when every task has at least k samples)")
    p.add_argument("--timeout", type=float, help="seconds per sample to run (default: the "
                   "benchmark's: 3 s, MBPP 15 s, other languages 10 s; compiling has its own limit)")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="samples run in parallel (default: the number of CPUs)")
    p.add_argument(UNSAFE_FLAG, dest="unsafe", action="store_true",
                   help="run model output WITHOUT isolation where bubblewrap is unavailable "
                   "(only on a disposable machine)")


def cmd_list(args) -> int:
    from codegemma.eval import datasets, languages
    from codegemma.eval.registry import BENCHMARKS
    rows, absent, broken = [], [], {}
    for b in BENCHMARKS.values():
        present = b.data_present(args.data_dir)
        why = b.runnable()
        if not present:
            absent.append(b.name)
        if why:
            broken[b.language] = why
        rows.append((b.name, str(b.size), b.mode, b.language, "yes" if present else "no",
                     "yes" if why is None else "no"))
    header = ("benchmark", "tasks", "mode", "language", "data present", "runnable")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if broken:
        print("\nnot runnable here:")
        for language, why in broken.items():
            print(f"  {languages.RUNNERS[language].title}: {why}")
    if absent:
        where = ", ".join(str(d) for d in datasets.data_dirs(args.data_dir))
        fix = ("" if args.data_dir else "they are downloaded on first use when online; offline, ")
        print(f"\nno data for {len(absent)} benchmarks in {where}: {fix}{datasets.DATA_HINT}")
    return 0


def _benchmarks(args) -> list:
    from codegemma.eval.registry import get_benchmark, suite_benchmarks
    if args.suite:
        return [get_benchmark(name) for name in suite_benchmarks(args.suite)]
    return [get_benchmark(args.benchmark)]


def _score(args, benchmark, problems, samples) -> tuple[list[dict], dict]:
    from codegemma.eval import harness, metrics
    ks = metrics.parse_ks(args.k)
    timeout = args.timeout if args.timeout is not None else benchmark.timeout_s
    results = harness.score(benchmark, problems, samples, timeout_s=timeout,
                            workers=args.workers, unsafe=args.unsafe)
    return results, harness.summary(benchmark, problems, results, ks)


def _save(out_dir: Path | None, results_path: Path | None, summary: dict, results: list) -> None:
    from codegemma.eval import harness
    from codegemma.eval.report import write_report
    if results_path is not None:
        harness.write_jsonl(results_path, results)
    if out_dir is not None:
        write_report(out_dir, summary, results)


def cmd_score(args) -> int:
    from codegemma.eval import harness
    if args.samples and args.suite:
        raise ValueError("--suite scores reference solutions (--canonical); score a samples "
                         "file with --benchmark NAME")
    benchmarks = _benchmarks(args)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if args.canonical:
        return _score_canonical(args, benchmarks, out)
    benchmark = benchmarks[0]
    samples = harness.read_samples(args.samples)
    problems = benchmark.problems(args.data_dir)
    results, summary = _score(args, benchmark, problems, samples)
    runs = {json.dumps(s.get("run"), sort_keys=True) for s in samples}
    if len(runs) == 1 and samples and samples[0].get("run"):
        summary["run"] = samples[0]["run"]  # from `eval run`: say which model made them
    _save(out, out / "results.jsonl" if out else Path(args.samples + "_results.jsonl"),
          summary, results)
    print(json.dumps(summary))  # the LAST line of stdout: the JSON summary
    return 0


def _canonical(args, benchmark, out: Path | None) -> dict:
    """Score the references; the summary says what was skipped and what failed, known or not."""
    from codegemma.eval.registry import KNOWN_BAD_REFERENCES
    problems = benchmark.problems(args.data_dir)
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution}
               for p in problems if p.canonical_solution is not None]
    results, summary = _score(args, benchmark, problems, samples) if samples else (
        [], {"benchmark": benchmark.name, "tasks": 0, "tasks_in_benchmark": len(problems)})
    expected = KNOWN_BAD_REFERENCES.get(benchmark.name, {})
    failed = [r["task_id"] for r in results if not r["passed"]]
    known = [t for t in failed if t in expected]
    unexpected = [t for t in failed if t not in expected]
    skipped = len(problems) - len(samples)
    line = (f"{len(samples) - len(failed)}/{len(samples)} reference solutions pass"
            f"{f'; {len(known)} known upstream failures' if known else ''}"
            f"{f'; {skipped} tasks have no reference solution upstream (not scored)' if skipped else ''}"
            f"{f'; UNEXPECTED failures: {len(unexpected)}' if unexpected else ''}")
    summary["canonical"] = {"references": len(samples), "passed": len(samples) - len(failed),
                            "no_reference": skipped, "known_failures": known,
                            "unexpected_failures": unexpected, "line": line}
    if out is not None and results:
        out.mkdir(parents=True, exist_ok=True)
        _save(out, out / "results.jsonl", summary, results)
    for row in results:
        if row["task_id"] in unexpected:
            print(f"  {row['task_id']}: {row['result'][:300]}", file=sys.stderr)
    return summary


def _score_canonical(args, benchmarks, out: Path | None) -> int:
    from codegemma.eval.report import write_suite
    summaries, unexpected = {}, []
    for benchmark in benchmarks:
        why = benchmark.runnable()
        if why and not args.suite:
            raise ValueError(f"cannot score {benchmark.name}: {why}")
        if why:
            print(f"{benchmark.name}: skipped ({why})", file=sys.stderr)
            summaries[benchmark.name] = {"benchmark": benchmark.name, "skipped": why}
            continue
        summary = _canonical(args, benchmark, None if out is None else
                             (out / benchmark.name if args.suite else out))
        summaries[benchmark.name] = summary
        unexpected += summary["canonical"]["unexpected_failures"]
        print(f"{benchmark.name}: {summary['canonical']['line']}", file=sys.stderr)
    if args.suite:
        print(write_suite(out, args.suite, summaries, canonical=True))
        final = {"suite": args.suite, "benchmarks": summaries}
    else:
        final = summaries[benchmarks[0].name]
    if unexpected:
        print(f"{len(unexpected)} reference solutions failed that are not known upstream "
              f"failures (docs/eval.md lists those): {', '.join(unexpected[:20])}"
              f"{' ...' if len(unexpected) > 20 else ''}", file=sys.stderr)
    print(json.dumps(final))
    return 1 if unexpected else 0


def _overwrite(out: Path) -> None:
    """Remove what `eval run` wrote into `out` (never anything else)."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)


def cmd_run(args) -> int:
    from codegemma.atomic import check_output_dir
    from codegemma.device import resolve_device
    from codegemma.eval import harness, provenance
    from codegemma.eval.generate import generate_samples
    from codegemma.eval.report import write_suite
    from codegemma.model.checkpoint import load_config
    from codegemma.models import resolve_model

    # before --out is created: a missing or broken model, a device this machine lacks or an --out that
    # is a file leave nothing behind (an existing --out directory is a run to resume)
    model_dir = resolve_model(args.model)
    load_config(model_dir)
    resolve_device(args.device)
    check_output_dir(args.out, force=True, option="--out")
    if args.n_samples < 1:
        raise ValueError("--n-samples must be at least 1")
    benchmarks, skipped = [], {}
    for benchmark in _benchmarks(args):
        why = benchmark.runnable()
        if why and not args.suite:
            raise ValueError(f"cannot run {benchmark.name}: {why}")
        if why:
            skipped[benchmark.name] = why
        else:
            benchmarks.append(benchmark)
    out = Path(args.out)
    dirs = {b.name: (out / b.name if args.suite else out) for b in benchmarks}
    records = {b.name: provenance.run_record(
        b.name, model_dir, args.fim_mode if b.mode == "infill" else None, args.max_new_tokens,
        args.temperature, args.seed, args.dtype) for b in benchmarks}
    if not args.overwrite:  # refuse before loading the model or writing anything
        for b in benchmarks:
            provenance.check_resume(dirs[b.name] / "samples.jsonl", records[b.name])
    limit = None if args.limit is None else max(0, args.limit)
    problems = {b.name: b.problems(args.data_dir)[:limit] for b in benchmarks}
    if args.overwrite:
        for b in benchmarks:
            _overwrite(dirs[b.name])
    import codegemma
    model = codegemma.load(model_dir, device=args.device, dtype=args.dtype, allow_nonfinite=args.allow_nonfinite,
                           quantize=args.quantize, group_size=args.group_size)
    try:
        for b in benchmarks:
            dirs[b.name].mkdir(parents=True, exist_ok=True)
            generate_samples(model, b, problems[b.name], dirs[b.name] / "samples.jsonl",
                             n_samples=args.n_samples, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                             seed=args.seed, fim_mode=args.fim_mode, record=records[b.name])
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
    summaries = {name: {"benchmark": name, "skipped": why} for name, why in skipped.items()}
    for b in benchmarks:
        wanted = {p.task_id for p in problems[b.name]}
        samples = [s for s in harness.read_samples(dirs[b.name] / "samples.jsonl")
                   if s["task_id"] in wanted]
        results, summary = _score(args, b, problems[b.name], samples)
        summaries[b.name] = summary = {**summary, "run": records[b.name]}
        _save(dirs[b.name], dirs[b.name] / "results.jsonl", summary, results)
        print(f"report: {dirs[b.name] / 'report.md'}")
    if args.suite:
        print(write_suite(out, args.suite, summaries))
        print(json.dumps({"suite": args.suite, "benchmarks": summaries}))
    else:
        print(json.dumps(summaries[benchmarks[0].name]))
    return 0
