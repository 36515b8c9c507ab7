"""`eval run`: generate samples with a model, resumably, then score and report.

Samples are appended to OUT/samples.jsonl one task at a time (all n samples of a task in one
write, flushed and fsynced), so a killed run loses at most the task in flight; a rerun reads the
file, drops a torn last line, and skips tasks that already have n samples. Each row carries the
run's record (`codegemma.eval.provenance`), checked before a rerun resumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from codegemma.eval.registry import Benchmark, Problem

# Where a brace language's function ends: the first closing brace at the function's own
# indentation (Java: the class's, which MBXP's completions also close; MxEval's C# methods sit
# 8 spaces deep inside their class and namespace, which the tests close).
BLOCK_END = {"cpp": "}", "go": "}", "java": "}", "js": "}", "kotlin": "}", "rust": "}",
             "csharp": "        }"}


def prompt_for(prompts, benchmark: Benchmark, problem: Problem, fim_mode: str = "psm",
               max_new_tokens: int = 128):
    """The Prompt (codegemma.fim.prompt) for one problem: FIM for infilling benchmarks, the problem's
    own text otherwise; built, fitted and capped as the CLI and the server build theirs."""
    if benchmark.mode == "infill":
        return prompts.fim(problem.prompt, problem.suffix, mode=fim_mode, max_new_tokens=max_new_tokens)
    return prompts.text(problem.prompt, max_new_tokens=max_new_tokens)


def postprocess(benchmark: Benchmark, text: str) -> str:
    """Cut a raw continuation at the benchmark's stop rules."""
    from codegemma.fim.format import cut_at_stop
    text, _ = cut_at_stop(text, benchmark.stop if benchmark.mode == "complete" else ())
    if benchmark.single_line:
        # The middle is one line: the first, newline included (the engine stops at the
        # newline and drops it, so it is put back).
        return text.split("\n", 1)[0] + "\n"
    closing = BLOCK_END.get(benchmark.language)
    at = ("\n" + text).find("\n" + closing) if closing else -1
    if at >= 0:  # `at` is where the closing line starts in `text`
        text = text[:at + len(closing)] + "\n"
    return text


def load_done(path: Path) -> dict[str, int]:
    """task_id -> samples already written; repairs a torn last line left by a kill."""
    done: dict[str, int] = {}
    if not path.exists():
        return done
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[row["task_id"]] = done.get(row["task_id"], 0) + 1
        good += len(line)
    if good != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def stop_texts(benchmark: Benchmark) -> list[str]:
    """What the engine stops at: the benchmark's stops, the FIM stop texts and, for single-line
    infilling, the first newline (only the first line is scored)."""
    from codegemma.fim.format import STOP_TEXTS
    return list(benchmark.stop) + list(STOP_TEXTS) + (["\n"] if benchmark.single_line else [])


def generate_samples(model, benchmark: Benchmark, problems: list[Problem], out_path: Path,
                     n_samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 128,
                     batch_size: int = 8, seed: int = 0, fim_mode: str = "psm",
                     record: dict | None = None) -> None:
    """`record`: the run's provenance, stored in every row."""
    done = load_done(out_path)
    todo = [p for p in problems if done.get(p.task_id, 0) < n_samples]
    # Stops applied by the engine (a shorter generation); postprocess cuts again.
    stop = stop_texts(benchmark)
    extra = {} if record is None else {"run": record}
    step = max(1, batch_size // n_samples)
    with open(out_path, "a", encoding="utf-8") as out, \
            tqdm(total=len(problems), initial=len(problems) - len(todo), unit="task",
                 desc=f"generating {benchmark.name}") as bar:
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            lines = []
            # Sample j of every task in the chunk comes from one call with seed + j, so n
            # samples of one prompt differ (with temperature > 0) yet the run is reproducible.
            for j in range(min(done.get(p.task_id, 0) for p in chunk), n_samples):
                owners = [p for p in chunk if done.get(p.task_id, 0) <= j]
                texts = model.run([prompt_for(model.prompts, benchmark, p, fim_mode, max_new_tokens)
                                   for p in owners],
                                  max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + j, stop=stop)
                lines += [json.dumps({"task_id": p.task_id,
                                      "completion": postprocess(benchmark, x), **extra}) + "\n"
                          for p, x in zip(owners, texts)]
            lines.sort(key=lambda line: [p.task_id for p in chunk].index(json.loads(line)["task_id"]))
            out.write("".join(lines))  # one write per chunk: whole tasks or nothing
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
