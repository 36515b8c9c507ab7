"""Reference solutions pass, the infilling example samples give the published numbers."""


import pytest

from codegemma.eval import datasets, harness
from codegemma.eval.registry import BENCHMARKS, KNOWN_BAD_REFERENCES, get_benchmark

PYTHON_SETS = ["humaneval", "humaneval-infill-single", "humaneval-infill-span",
               "humaneval-infill-span-light", "mbpp", "humaneval-x-python",
               "humaneval-infill-multi", "mbxp-python"]


def score_canonical(name, data_dir, every=1):
    bench = get_benchmark(name)
    if not bench.data_present(data_dir):
        pytest.skip(f"{name}: data not present in {data_dir}")
    problems = bench.problems(data_dir)
    assert len(problems) == bench.size
    chosen = problems[::every]  # the 5815-task set: a deterministic subset keeps this fast
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in chosen]
    results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s, progress=False)
    return bench, problems, results


@pytest.mark.parametrize("name", PYTHON_SETS)
def test_canonical_solutions_pass(name, data_dir):
    every = 20 if name == "humaneval-infill-multi" else 1
    bench, problems, results = score_canonical(name, data_dir, every)
    known = KNOWN_BAD_REFERENCES.get(name, {})
    failures = [(r["task_id"], r["result"]) for r in results
                if not r["passed"] and r["task_id"] not in known]
    assert failures == []
    passed = harness.summary(bench, problems, results, [1])["pass@1"] * len(results)
    assert round(passed) == len(results) - len(known)  # and every known one fails


def test_mbpp_is_the_standard_test_split(data_dir):
    ids = [p.task_id for p in get_benchmark("mbpp").problems(data_dir)]
    assert ids[0] == "MBPP/11" and ids[-1] == "MBPP/510" and len(ids) == 500


def test_infilling_example_samples(data_dir):
    bench = get_benchmark("humaneval-infill-example")
    problems = bench.problems(data_dir)
    path = data_dir / "human-eval-infilling" / "example_samples.jsonl"
    samples = harness.read_samples(path)
    results = harness.score(bench, problems, samples, progress=False)
    summary = harness.summary(bench, problems, results, [1, 10])
    assert summary["pass@1"] == pytest.approx(0.3)
    assert summary["pass@10"] == pytest.approx(1.0)
    # the sleeping samples time out; the harmful one is contained and fails
    assert sum(r["result"] == "timed out" for r in results) == 2


def test_empty_and_wrong_completions_fail(data_dir):
    bench = get_benchmark("humaneval")
    problems = bench.problems(data_dir)[:3]
    samples = [{"task_id": p.task_id, "completion": c} for p in problems
               for c in ("", "   \n", "    return None\n")]
    results = harness.score(bench, problems, samples, progress=False)
    assert not any(r["passed"] for r in results)
    assert all(r["result"].startswith("failed") for r in results)


def test_every_registered_benchmark_loads_its_published_file(data_dir):
    """Each file passes its sha256 check and gives the registered number of distinct tasks in
    the registered language."""
    for bench in BENCHMARKS.values():
        problems = bench.problems(data_dir, download=False)
        assert len({p.task_id for p in problems}) == bench.size, bench.name
        assert {p.language for p in problems} == {bench.language}, bench.name


def test_registry_checksums_are_the_provenance_files(data_dir):
    for key, spec in datasets.FILES.items():
        provenance = (data_dir / spec.relpath.split("/")[0] / "PROVENANCE.md").read_text()
        assert spec.sha256 in provenance, key


def test_known_bad_references_are_real_tasks_with_reasons(data_dir):
    for name, known in KNOWN_BAD_REFERENCES.items():
        with_reference = {p.task_id for p in get_benchmark(name).problems(data_dir)
                          if p.canonical_solution is not None}
        assert set(known) <= with_reference, name
        assert all(len(reason) > 20 for reason in known.values()), name
