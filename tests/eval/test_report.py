import json

from codegemma.eval.report import group_of, write_report


def test_report_files(tmp_path):
    results = [{"task_id": f"HumanEval/{i}", "completion": "", "passed": i % 2 == 0,
                "result": "passed" if i % 2 == 0 else "failed: assertion"} for i in range(6)]
    summary = {"pass@1": 0.5, "benchmark": "humaneval", "tasks": 6, "tasks_in_benchmark": 164,
               "samples": 6, "k_not_reported": [10],
               "results": {"passed": 3, "failed: assertion": 3}}
    md = write_report(tmp_path, summary, results).read_text()
    assert "| pass@1 | 0.5000 |" in md and "pass_rate.png" in md
    assert "HumanEval/1, HumanEval/3, HumanEval/5" in md and "k = [10]" in md
    assert json.loads((tmp_path / "summary.json").read_text())["pass@1"] == 0.5
    assert (tmp_path / "pass_rate.png").read_bytes()[:4] == b"\x89PNG"


def test_infilling_tasks_group_by_problem():
    assert group_of("MultiLineInfilling/HumanEval/3/L0_L2") == "HumanEval/3"
    assert group_of("HumanEval/3") == "HumanEval/3"
    assert group_of("MBPP/11") == "MBPP/11"


def test_suite_table_has_languages_as_columns(tmp_path):
    from codegemma.eval.report import write_suite
    summaries = {"humaneval-x-cpp": {"benchmark": "humaneval-x-cpp", "pass@1": 0.25},
                 "humaneval": {"benchmark": "humaneval", "pass@1": 0.5},
                 "humaneval-x-go": {"benchmark": "humaneval-x-go", "skipped": "needs go"},
                 "mbxp-cpp": {"benchmark": "mbxp-cpp", "pass@1": 0.125}}
    text = write_suite(tmp_path, "multilingual", summaries)
    lines = text.splitlines()
    assert lines[0].split()[-8:] == ["C++", "C#", "Go", "Java", "JavaScript", "Kotlin", "Python",
                                     "Rust"]
    humaneval = lines[1].split()
    assert humaneval[0] == "HumanEval" and humaneval[1] == "25.0" and humaneval[3] == "n/a"
    assert humaneval[7] == "50.0"
    mbpp = lines[2].split()
    assert mbpp[0] == "MBPP" and mbpp[1] == "12.5" and mbpp[-1] == "-"  # MBXP has no Rust
    assert "humaneval-x-go: not run (needs go)" in text
    md = (tmp_path / "multilingual.md").read_text()
    assert md.startswith("| multilingual: pass@1 (%) | C++ | C# | Go |")
    assert json.loads((tmp_path / "multilingual.json").read_text())["cells"]["MBPP"]["cpp"] == "12.5"
    assert (tmp_path / "multilingual.png").read_bytes()[:4] == b"\x89PNG"
