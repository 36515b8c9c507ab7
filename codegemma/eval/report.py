"""Reports: summary.json, report.md and plots (matplotlib, Agg backend) for one evaluation."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from codegemma.eval import metrics


def write_json(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


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
    fig.savefig(path, dpi=100)
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
    path.write_text(markdown(summary, results, plot.name), encoding="utf-8")
    return path
