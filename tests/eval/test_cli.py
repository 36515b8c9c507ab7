"""The `codegemma eval` commands, run as a user runs them (real subprocesses)."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegemma", "eval", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_list_shows_benchmarks_sizes_and_data(data_dir):
    out = cli("list", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("\n\n")[0]  # notes on missing toolchains or data follow
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["humaneval"][1] == "164"
    assert rows["humaneval-infill-single"][1] == "1033"
    assert rows["humaneval-infill-multi"][1] == "5815"
    assert rows["mbpp"][1] == "500"
    assert "humaneval-infill-span" in rows and "humaneval-infill-span-light" in rows
    assert rows["humaneval"][4] == "yes"
    missing = cli("list", "--data-dir", "/nonexistent")
    assert missing.stdout.splitlines()[1].split()[4] == "no"
    assert "no data for" in missing.stdout and "/nonexistent" in missing.stdout
    assert "--data-dir DIR or set CODEGEMMA_DATA_DIR" in missing.stdout


def test_score_writes_results_and_prints_summary_last(data_dir, tmp_path):
    samples = tmp_path / "samples.jsonl"
    shutil.copy(data_dir / "human-eval-infilling" / "example_samples.jsonl", samples)
    out = cli("score", "--benchmark", "humaneval-infill-example", "--samples", str(samples),
              "--data-dir", str(data_dir), "--k", "1,10", "--workers", "2")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["pass@1"] == pytest.approx(0.3)
    assert summary["pass@10"] == pytest.approx(1.0)
    rows = [json.loads(line) for line in open(str(samples) + "_results.jsonl")]
    assert len(rows) == 10
    assert all({"task_id", "completion", "passed", "result"} <= set(r) for r in rows)
    assert sum(r["passed"] for r in rows) == 3


def test_score_uses_the_data_dir_environment_variable(data_dir, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"})
                       + "\n")
    env = {**os.environ, "CODEGEMMA_DATA_DIR": str(data_dir)}
    out = cli("score", "--benchmark", "humaneval", "--samples", str(samples), "--k", "1,10",
              env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["pass@1"] == 0.0 and "pass@10" not in summary  # n=1 < 10: not reported
    assert summary["k_not_reported"] == [10]


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "nope"], "unknown benchmark 'nope'"),
    (["--benchmark", "humaneval", "--k", "1,x"], "--k must be"),
    (["--benchmark", "humaneval", "--data-dir", "/nonexistent"], "does not exist"),
])
def test_user_errors_are_one_line(data_dir, tmp_path, args, message):
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n')
    extra = [] if "--data-dir" in args else ["--data-dir", str(data_dir)]
    out = cli("score", "--samples", str(samples), *args, *extra)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_samples_file_is_named(data_dir, tmp_path):
    samples = tmp_path / "bad.jsonl"
    samples.write_text("{not json}\n")
    out = cli("score", "--benchmark", "humaneval", "--samples", str(samples),
              "--data-dir", str(data_dir))
    assert out.returncode == 2 and "bad.jsonl:1" in out.stderr


def test_refuses_without_isolation_unless_told(data_dir, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"})
                       + "\n")
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on PATH
    args = ("score", "--benchmark", "humaneval", "--samples", str(samples),
            "--data-dir", str(data_dir))
    out = cli(*args, env=env)
    assert out.returncode == 2
    assert "bubblewrap" in out.stderr and "--unsafe-no-sandbox" in out.stderr
    unsafe = cli(*args, "--unsafe-no-sandbox", env=env)
    assert unsafe.returncode == 0, unsafe.stderr
    assert json.loads(unsafe.stdout.strip().splitlines()[-1])["pass@1"] == 0.0


def test_canonical_self_test_counts_known_and_skipped(data_dir, tmp_path):
    """HumanEval-X JavaScript: the known upstream failures fail and are named, every other
    reference passes (exit 0), and the files written have ordinary permissions."""
    from codegemma.eval.registry import KNOWN_BAD_REFERENCES, get_benchmark
    if get_benchmark("humaneval-x-js").runnable():
        pytest.skip(get_benchmark("humaneval-x-js").runnable())
    out = cli("score", "--benchmark", "humaneval-x-js", "--canonical", "--data-dir",
              str(data_dir), "--out", str(tmp_path / "canon"))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    canonical = summary["canonical"]
    known = sorted(KNOWN_BAD_REFERENCES["humaneval-x-js"])
    assert sorted(canonical["known_failures"]) == known and canonical["unexpected_failures"] == []
    assert canonical["references"] == 164 and canonical["passed"] == 164 - len(known)
    assert "reference solutions pass" in (tmp_path / "canon" / "report.md").read_text()
    for name in ("results.jsonl", "summary.json", "report.md"):  # ordinary permissions
        mode = (tmp_path / "canon" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~current_umask(), (name, oct(mode))


def test_canonical_self_test_fails_on_an_unexpected_failure(data_dir, monkeypatch, capsys):
    """Three JavaScript tasks, one with a wrong reference that is not on the known list: the
    self-test names it and exits 1."""
    import argparse
    import dataclasses

    from codegemma.eval import commands, registry
    js = registry.get_benchmark("humaneval-x-js")
    if js.runnable():
        pytest.skip(js.runnable())
    tiny = dataclasses.replace(js, name="tiny-js", size=3,
                               load=lambda records: js.load(records)[110:113])
    monkeypatch.setitem(registry.BENCHMARKS, "tiny-js", tiny)
    monkeypatch.setattr(registry, "KNOWN_BAD_REFERENCES", {})
    args = argparse.Namespace(benchmark="tiny-js", suite=None, canonical=True, samples=None,
                              out=None, data_dir=str(data_dir), k="1", timeout=None, workers=2,
                              unsafe=False)
    assert commands.cmd_score(args) == 1
    err = capsys.readouterr().err
    assert "JavaScript/112" in err and "not known upstream failures" in err
    assert "2/3 reference solutions pass" in err


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
