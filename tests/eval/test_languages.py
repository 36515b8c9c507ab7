"""HumanEval-X in C++, JavaScript and Java: reference solutions pass, tricks fail."""


import pytest

from codegemma.eval import harness, languages
from codegemma.eval.registry import get_benchmark

EARLY_EXIT = {  # a successful exit before the function body: must not count as a pass
    "cpp": "    exit(0);\n",
    "js": "  process.exit(0);\n",
    "java": "        System.exit(0);\n",
}


def problems_for(language, data_dir):
    bench = get_benchmark(f"humaneval-x-{language}")
    why = bench.runnable()
    if why:
        pytest.skip(f"{bench.name}: {why}")
    if not bench.data_present(data_dir):
        pytest.skip(f"{bench.name}: no data in {data_dir}")
    return bench, bench.problems(data_dir)


@pytest.mark.parametrize("language", ["cpp", "js", "java"])
def test_reference_passes_and_early_exit_fails(language, data_dir):
    bench, problems = problems_for(language, data_dir)
    chosen = problems[:2]
    exit_line = EARLY_EXIT[language]
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in chosen]
    # the reference body with an early successful exit in front of it
    samples.append({"task_id": chosen[0].task_id,
                    "completion": exit_line + chosen[0].canonical_solution})
    results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s, progress=False)
    assert [r["passed"] for r in results] == [True, True, False], results
    assert "exited early" in results[2]["result"]


def test_wrong_cpp_fails_and_compile_errors_are_named(data_dir):
    bench, problems = problems_for("cpp", data_dir)
    p = problems[0]
    samples = [{"task_id": p.task_id, "completion": "    return false;\n}\n"},
               {"task_id": p.task_id, "completion": "    this is not C++\n}\n"}]
    results = harness.score(bench, problems, samples, progress=False)
    assert results[0]["result"].startswith("failed: crash") or "test failed" in results[0]["result"]
    assert results[1]["result"].startswith("failed: compile error")


def test_unrunnable_languages_say_why():
    assert "crates" in languages.missing("rust")
    assert languages.missing("python") is None
    for lang in ("go", "csharp", "kotlin"):
        reason = languages.missing(lang)
        assert reason and lang in reason
