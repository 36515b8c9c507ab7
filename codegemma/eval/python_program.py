"""How a Python sample is tested: what runs in the sample's process and what in the judge's.

The sample's process runs the sample's program (prompt + completion [+ suffix]). The judge runs
benchmark code only: the test, after the *context*, the top-level imports and definitions of the
reference program that lie wholly in text the benchmark fixed (the prompt before the hole, the
suffix after it), such as HumanEval/32's `poly` or /38's `encode_cyclic`, which the tests call
themselves. Every other name the test looks up (the entry point, MBPP's function, MBPP/367's
`Node`) is *remote*: a proxy to the sample's process (see `sandbox_python`). So the tests'
helpers are the benchmark's even when a completion redefines them, and a benchmark name shadowed
by the sample (MBPP/126 names its function `sum`) is the sample's, as in one process.
"""

from __future__ import annotations

import ast
import builtins
import functools
import symtable
import warnings
from dataclasses import dataclass

CONTEXT_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class PythonProgram:
    sample: str                 # the sample's program: what its process runs
    context: str                # benchmark definitions the tests may use (the judge runs them)
    test: str                   # the benchmark's test (the judge runs it)
    remote: tuple[str, ...]     # names the test looks up in the sample's process
    check: str | None = None    # entry point: the judge calls check(<it>) after the test


def free_names(source: str) -> set[str]:
    """Global names `source` reads but never binds at module level (in any of its scopes)."""
    top = symtable.symtable(source, "<test>", "exec")
    bound = {s.get_name() for s in top.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_parameter()}
    read = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for s in table.get_symbols():
            if s.is_declared_global() and s.is_assigned():
                bound.add(s.get_name())
            elif s.is_global() and s.is_referenced():
                read.add(s.get_name())
    return read - bound


def top_level_names(nodes: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def split_reference(fixed_before: str, hole: str, fixed_after: str
                    ) -> tuple[list[str], set[str]]:
    """(context statements, names the hole's text defines) of the reference program
    `fixed_before + hole + fixed_after`: context statements lie wholly in the fixed text."""
    source = fixed_before + hole + fixed_after
    try:
        with warnings.catch_warnings():  # benchmark code has its invalid escapes ("\w")
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(source)
    except SyntaxError:  # no reference to learn from: everything is the sample's
        return [], set()
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    begin, end = len(fixed_before), len(fixed_before) + len(hole)
    context, in_hole = [], []
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        start = line_starts[first - 1]
        stop = line_starts[node.end_lineno - 1] + node.end_col_offset
        if isinstance(node, CONTEXT_NODES) and (stop < begin or start > end):
            context.append(source[start:stop])
        elif not (stop < begin or start > end):
            in_hole.append(node)
    return context, top_level_names(in_hole)


def build(sample: str, test: str, entry_point: str | None, fixed_before: str = "",
          reference_hole: str = "", fixed_after: str = "") -> PythonProgram:
    """The program for `sample` against `test`; the reference program, when known, is
    `fixed_before + reference_hole + fixed_after` (prompt, canonical solution, suffix)."""
    context, remote = judge_side(test, entry_point, fixed_before, reference_hole, fixed_after)
    return PythonProgram(sample, context, test, remote, entry_point)


@functools.lru_cache(maxsize=8192)  # a task's samples share it: parse its code once
def judge_side(test: str, entry_point: str | None, fixed_before: str, reference_hole: str,
               fixed_after: str) -> tuple[str, tuple[str, ...]]:
    """(context, remote names) of a task: they do not depend on the sample."""
    context, hole_names = split_reference(fixed_before, reference_hole, fixed_after)
    context_names = top_level_names([s for c in context for s in ast.parse(c).body])
    if entry_point:
        context_names.discard(entry_point)
        context = [c for c in context if entry_point not in top_level_names(ast.parse(c).body)]
    shadowing = set(dir(builtins)) - hole_names - {entry_point}
    remote = free_names(test) - context_names - shadowing
    if entry_point:
        remote.add(entry_point)
    return "\n\n".join(context), tuple(sorted(remote))


def for_problem(problem, completion: str) -> PythonProgram:
    """The program of a registry `Problem` and a completion."""
    code, test, entry = problem.program(completion)
    if problem.include_prompt:
        return build(code, test, entry, problem.prompt, problem.canonical_solution,
                     problem.suffix)
    return build(code, test, entry, "", problem.canonical_solution, "")
