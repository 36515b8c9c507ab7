"""benchmarks/results_md.py: a rerun lands at the end of its own section of RESULTS.md."""

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "results_md", Path(__file__).resolve().parents[1] / "benchmarks" / "results_md.py")
results_md = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(results_md)


def test_runs_go_to_the_end_of_their_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    results_md.record("Training", "### run 1\n\nfast", path)
    results_md.record("Inference", "### run A", path)
    results_md.record("Training", "### run 2\n\nfaster\n", path)
    text = path.read_text()
    assert text.startswith("# Benchmark results\n")
    assert text.count("## Training") == 1 and text.count("## Inference") == 1
    assert text.index("run 1") < text.index("run 2") < text.index("## Inference") < text.index("run A")
    assert not list(tmp_path.glob(".*tmp*"))   # written atomically, nothing left behind
