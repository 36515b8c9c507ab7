"""`codegemma eval list|score|run`: benchmarks, scoring samples in the sandbox, model runs."""

from __future__ import annotations

from codegemma.fim.format import MODES

import argparse
import json
import os
from pathlib import Path

from codegemma.eval.sandbox import UNSAFE_FLAG
from codegemma.model.commands import add_allow_nonfinite


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="execution-based benchmarks (HumanEval, "
                                   "HumanEval infilling, MBPP) scored in a sandbox")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="the benchmarks, their sizes and whether their data is here")
    p.add_argument("--data-dir", help="benchmarks folder (default: $CODEGEMMA_DATA_DIR, cache)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("score", help="score a samples file (JSON lines task_id, completion)")
    _common(p)
    p.add_argument("--samples", required=True, help="JSON lines {task_id, completion}")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("run", help="generate with a model, score, and write a report")
    _common(p)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (HF format), or nano (default): the built-in codegemma-nano")
    p.add_argument("--out", required=True, help="output directory (a rerun resumes it)")
    p.add_argument("--n-samples", type=int, default=1, help="samples per task (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature, 0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=128, help="most tokens generated per sample")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--limit", type=int, help="only the first N tasks")
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
    p.add_argument("--benchmark", required=True, help="benchmark name (see `codegemma eval list`)")
    p.add_argument("--data-dir", help="benchmarks folder (default: $CODEGEMMA_DATA_DIR, the "
                   "cache ~/.cache/codegemma/benchmarks, else download once)")
    p.add_argument("--k", default="1,10,100", help="pass@k values (default 1,10,100; each "
                   "reported only when every task has at least k samples)")
    p.add_argument("--timeout", type=float, help="seconds per sample (default: the benchmark's, "
                   "3 s; MBPP 15 s)")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="samples run in parallel (default: the number of CPUs)")
    p.add_argument(UNSAFE_FLAG, dest="unsafe", action="store_true",
                   help="run model output WITHOUT isolation where bubblewrap is unavailable "
                   "(only on a disposable machine)")


def cmd_list(args) -> int:
    from codegemma.eval.registry import BENCHMARKS
    rows = []
    for b in BENCHMARKS.values():
        present = b.data_present(args.data_dir)
        runner = b.runnable()
        rows.append((b.name, str(b.size), b.mode, b.language, "yes" if present else "no",
                     "yes" if runner is None else runner))
    header = ("benchmark", "tasks", "mode", "language", "data present", "runnable")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _score_and_report(args, benchmark, problems, samples, results_path: Path,
                      report_dir: Path | None) -> dict:
    from codegemma.eval import harness, metrics
    from codegemma.eval.report import write_report
    ks = metrics.parse_ks(args.k)
    timeout = args.timeout if args.timeout is not None else benchmark.timeout_s
    results = harness.score(benchmark, problems, samples, timeout_s=timeout,
                            workers=args.workers, unsafe=args.unsafe)
    harness.write_jsonl(results_path, results)
    summary = harness.summary(benchmark, problems, results, ks)
    if report_dir is not None:
        write_report(report_dir, summary, results)
    return summary


def cmd_score(args) -> int:
    from codegemma.eval import harness
    from codegemma.eval.registry import get_benchmark
    benchmark = get_benchmark(args.benchmark)
    samples = harness.read_samples(args.samples)
    problems = benchmark.problems(args.data_dir)
    summary = _score_and_report(args, benchmark, problems, samples,
                                Path(args.samples + "_results.jsonl"), None)
    print(json.dumps(summary))  # the LAST line of stdout: the JSON summary
    return 0


def cmd_run(args) -> int:
    from codegemma.atomic import check_output_dir
    from codegemma.device import resolve_device
    from codegemma.eval import harness
    from codegemma.eval.generate import generate_samples
    from codegemma.eval.registry import get_benchmark
    from codegemma.model.checkpoint import load_config
    from codegemma.models import resolve_model

    # before --out is created: a missing or broken model, a device this machine lacks or an --out that
    # is a file leave nothing behind (an existing --out directory is a run to resume)
    model_dir = resolve_model(args.model)
    load_config(model_dir)
    resolve_device(args.device)
    check_output_dir(args.out, force=True, option="--out")
    benchmark = get_benchmark(args.benchmark)
    if benchmark.runnable():
        raise ValueError(f"cannot run {benchmark.name}: {benchmark.runnable()}")
    if args.n_samples < 1:
        raise ValueError("--n-samples must be at least 1")
    problems = benchmark.problems(args.data_dir)
    if args.limit is not None:
        problems = problems[: max(0, args.limit)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / "samples.jsonl"
    import codegemma
    model = codegemma.load(model_dir, device=args.device, dtype=args.dtype, allow_nonfinite=args.allow_nonfinite,
                           quantize=args.quantize, group_size=args.group_size)
    try:
        generate_samples(model, benchmark, problems, samples_path, n_samples=args.n_samples,
                         temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size, seed=args.seed, fim_mode=args.fim_mode)
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
    wanted = {p.task_id for p in problems}
    samples = [s for s in harness.read_samples(samples_path) if s["task_id"] in wanted]
    summary = _score_and_report(args, benchmark, problems, samples,
                                out / "results.jsonl", out)
    print(f"report: {out / 'report.md'}")
    print(json.dumps(summary))
    return 0
