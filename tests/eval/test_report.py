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
