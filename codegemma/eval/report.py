"""Reports: summary.json, report.md and plots (matplotlib, Agg backend) for one evaluation,
and the multilingual table (languages as columns, as the CodeGemma report prints it)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from codegemma.atomic import atomic_path, atomic_write_text
from codegemma.eval import metrics


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def group_of(task_id: str) -> str:
    """The HumanEval problem a task belongs to ("MultiLineInfilling/HumanEval/3/L0_L2" ->
    "HumanEval/3"): infilling sets have many tasks per problem."""
    parts = task_id.split("/")
    if len(parts) >= 3 and parts[1] == "HumanEval":
        return "/".join(parts[1:3])
    return task_id


def plot_pass_rates(results: list[dict], kinds: dict[str, int], title: str, path: Path) -> Path:
    """Left: pass rate per task (per HumanEval problem when there are many tasks).
    Right: how the samples ended (passed, assertion, exception, timed out, ...)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = metrics.per_task_counts(results)
    groups: dict[str, list[float]] = {}
    for task, (n, c) in counts.items():
        key = group_of(task) if len(counts) > 200 else task
        groups.setdefault(key, []).append(c / n)
    names = list(groups)
    rates = [sum(v) / len(v) for v in groups.values()]
    width = max(6.0, min(24.0, len(names) * 0.08))
    fig, (ax, kx) = plt.subplots(1, 2, figsize=(width + 4.5, 3.5),
                                 gridspec_kw={"width_ratios": [width, 4.5]})
    labels = sorted(kinds, key=kinds.get)
    kx.barh(labels, [kinds[k] for k in labels], color="#888888")
    kx.set_xlabel("samples")
    kx.set_title("results")
    ax.bar(range(len(names)), rates, width=1.0, color="#3b7dd8")
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel("pass rate")
    ax.set_xlabel("problem" if len(counts) > 200 else "task")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def markdown(summary: dict, results: list[dict], plot_name: str | None) -> str:
    lines = [f"# {summary['benchmark']}: evaluation report", ""]
    lines += ["| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in summary.items() if k.startswith("pass@")]
    lines += [f"| tasks | {summary['tasks']} of {summary['tasks_in_benchmark']} |",
              f"| samples | {summary['samples']} |", ""]
    if summary.get("k_not_reported"):
        lines += [f"pass@k not reported for k = {summary['k_not_reported']}: some task has fewer "
                  "than k samples.", ""]
    run = summary.get("run")
    if run:
        lines += ["## Run", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in run.items()] + [""]
    canonical = summary.get("canonical")
    if canonical:
        lines += ["## Reference solutions (canonical self-test)", "", canonical["line"] + ".", ""]
        if canonical["known_failures"]:
            lines += ["Known upstream failures (docs/eval.md says why): "
                      + ", ".join(canonical["known_failures"]), ""]
    lines += ["## Results by kind", "", "| result | samples |", "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(summary["results"].items())]
    if plot_name:
        lines += ["", "## Pass rate by task", "", f"![pass rate by task]({plot_name})"]
    failed = Counter(r["task_id"] for r in results if not r["passed"])
    counts = metrics.per_task_counts(results)
    never = [t for t, (n, c) in counts.items() if c == 0]
    lines += ["", f"## Tasks never solved ({len(never)} of {len(counts)})", ""]
    lines += [", ".join(never[:200]) + (" ..." if len(never) > 200 else "") if never else "none"]
    if failed:
        first = {}
        for r in results:
            if not r["passed"]:
                first.setdefault(r["task_id"], r["result"])
        lines += ["", "## First failure of each task (up to 50)", "", "| task | result |",
                  "|---|---|"]
        lines += [f"| {t} | {first[t][:120].replace('|', '/')} |" for t in list(first)[:50]]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, summary: dict, results: list[dict]) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / "summary.json", summary)
    plot = plot_pass_rates(results, summary["results"], f"{summary['benchmark']}: pass rate",
                           out_dir / "pass_rate.png")
    path = out_dir / "report.md"
    atomic_write_text(path, markdown(summary, results, plot.name))
    return path


def suite_cells(summaries: dict[str, dict], suite: dict, canonical: bool
                ) -> dict[str, dict[str, str]]:
    """row -> language -> cell text: pass@1 in percent (canonical: references passing / scored),
    "n/a" where the toolchain is missing, "-" where the suite has no such benchmark."""
    cells: dict[str, dict[str, str]] = {}
    for row, by_language in suite.items():
        cells[row] = {}
        for language, name in by_language.items():
            summary = summaries.get(name) if name else None
            if summary is None:
                cells[row][language] = "-"
            elif "skipped" in summary:
                cells[row][language] = "n/a"
            elif canonical:
                c = summary["canonical"]
                cells[row][language] = f"{c['passed']}/{c['references']}" if c["references"] else "-"
            else:
                cells[row][language] = f"{100 * summary['pass@1']:.1f}"
    return cells


def write_suite(out_dir: str | os.PathLike | None, name: str, summaries: dict[str, dict],
                canonical: bool = False) -> str:
    """The suite's table as text (also OUT/<name>.md, .json and a bar plot <name>.png)."""
    from codegemma.eval.languages import RUNNERS
    from codegemma.eval.registry import LANGUAGES, get_suite
    suite = get_suite(name)
    cells = suite_cells(summaries, suite, canonical)
    what = "reference solutions passing" if canonical else "pass@1 (%)"
    header = [f"{name}: {what}"] + [RUNNERS[lang].title for lang in LANGUAGES]
    rows = [[row] + [cells[row].get(lang, "-") for lang in LANGUAGES] for row in suite]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    text = "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in [header] + rows)
    notes = sorted({f"{s['benchmark']}: not run ({s['skipped']})" for s in summaries.values()
                    if "skipped" in s})
    if notes:
        text += "\n" + "\n".join(notes)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(LANGUAGES) + "|"]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        atomic_write_text(out / f"{name}.md", "\n".join(md + [""] + notes) + "\n")
        write_json(out / f"{name}.json", {"suite": name, "cells": cells, "benchmarks": summaries})
        if not canonical:
            plot_suite(cells, f"{name}: pass@1", out / f"{name}.png")
    return text


def plot_suite(cells: dict[str, dict[str, str]], title: str, path: Path) -> Path:
    """Grouped bars: languages along x, one bar per row (HumanEval, MBPP)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codegemma.eval.languages import RUNNERS
    from codegemma.eval.registry import LANGUAGES

    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / max(1, len(cells))
    for i, (row, by_language) in enumerate(cells.items()):
        xs = [j + (i - (len(cells) - 1) / 2) * width for j in range(len(LANGUAGES))]
        values = [float(by_language[lang]) if by_language.get(lang, "-") not in ("-", "n/a")
                  else 0.0 for lang in LANGUAGES]
        bars = ax.bar(xs, values, width=width, label=row)
        for bar, lang in zip(bars, LANGUAGES):
            if by_language.get(lang, "-") in ("-", "n/a"):
                ax.annotate(by_language.get(lang, "-"), (bar.get_x() + bar.get_width() / 2, 0),
                            ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(LANGUAGES)), [RUNNERS[lang].title for lang in LANGUAGES])
    ax.set_ylabel("pass@1 (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
