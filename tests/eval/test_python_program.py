"""Which code the judge runs and which names it looks up in the sample's process."""

import pytest

from codegemma.eval import harness, python_program
from codegemma.eval.python_program import build, free_names
from codegemma.eval.registry import get_benchmark


def test_free_names_are_the_globals_a_test_reads_without_binding():
    test = ("import math\nLIMIT = 3\ndef check(candidate):\n    assert candidate(1) == 2\n"
            "    assert math.fabs(poly([1], 0.5)) < LIMIT\n    assert [helper(x) for x in y]\n"
            "def later():\n    global made\n    made = 1\ncheck(entry)\nassert sum(made) == 1\n")
    assert free_names(test) == {"poly", "helper", "y", "entry", "sum"}


def test_the_context_is_the_fixed_text_and_the_entry_point_is_remote():
    prompt = ("import math\n\n\ndef poly(xs, x):\n    return sum(x ** i for i in xs)\n\n\n"
              "def find_zero(xs):\n    \"\"\"doc\"\"\"\n")
    test = "def check(candidate):\n    assert poly([1], candidate([1])) == 1\n"
    program = build(prompt + "    return 0\n", test, "find_zero", prompt, "    return 0.0\n", "")
    assert program.remote == ("find_zero",)
    assert "def poly" in program.context and "import math" in program.context
    assert "find_zero" not in program.context
    assert program.sample.endswith("    return 0\n") and program.check == "find_zero"


def test_infilling_context_comes_from_both_sides_of_the_hole():
    before = "def helper():\n    return 1\n\ndef entry(x):\n    y = x\n"
    after = "    return y\n\ndef after():\n    return 2\n"
    test = "def check(c):\n    assert c(1) == helper() and after() == 2\n"
    program = build(before + "    y += 1\n" + after, test, "entry", before, "    y += 0\n", after)
    assert "def helper" in program.context and "def after" in program.context
    assert "def entry" not in program.context and program.remote == ("entry",)


def test_mbpp_names_the_completion_defines_are_remote_even_builtin_ones():
    # MBPP/126 calls its function `sum`; the sample's `sum` is the one under test
    program = build("def sum(a, b):\n    return 1\n", "assert sum(10, 15) == 6\n", None,
                    "", "def sum(a, b):\n    return 6\n", "")
    assert program.remote == ("sum",) and program.context == ""
    # a builtin the completion does not define stays the judge's own
    program = build("def f(x):\n    return x\n", "assert f(len([1])) == 1\n", None,
                    "", "def f(x):\n    return x\n", "")
    assert program.remote == ("f",)


@pytest.mark.parametrize("name, task, names", [
    ("humaneval", "HumanEval/32", ("find_zero",)),
    ("humaneval-x-python", "Python/38", ("decode_cyclic",)),
    ("mbpp", "MBPP/367", ("Node", "is_tree_balanced")),
    ("mbpp", "MBPP/126", ("sum",)),
])
def test_benchmark_programs(data_dir, name, task, names):
    problem = next(p for p in get_benchmark(name).problems(data_dir) if p.task_id == task)
    program = python_program.for_problem(problem, problem.canonical_solution)
    assert program.remote == names


def test_a_completion_that_redefines_the_tests_helper_does_not_pass(data_dir):
    """HumanEval/32's test checks find_zero's answer with the prompt's `poly`: a completion
    that replaces `poly` by one that is always 0 fools one process, not the judge."""
    bench = get_benchmark("humaneval")
    problems = bench.problems(data_dir)
    forged = "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"
    samples = [{"task_id": "HumanEval/32", "completion": forged},
               {"task_id": "HumanEval/32",
                "completion": next(p for p in problems if p.task_id == "HumanEval/32")
                .canonical_solution}]
    results = harness.score(bench, problems, samples, progress=False)
    assert [r["passed"] for r in results] == [False, True]
    assert results[0]["result"] == "failed: assertion"
