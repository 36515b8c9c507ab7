"""`eval run`: generation (prompts, stop rules, resume) and the end-to-end command."""

import json
import subprocess
import sys

import pytest

from codegemma.eval.generate import generate_samples, load_done, postprocess, prompt_for
from codegemma.eval.registry import get_benchmark
from codegemma.fim.format import render_fim
from codegemma.fim.prompt import PromptBuilder
from codegemma.models import resolve_model
from codegemma.tokenizer import Tokenizer


def _builder():
    return PromptBuilder(Tokenizer.load(resolve_model(None)), 2048)


class EchoModel:
    """Stands in for codegemma.load(...) where exact outputs matter: records its calls."""

    def __init__(self, text):
        self.text, self.calls = text, []
        self.prompts = _builder()

    def run(self, prompts, max_new_tokens, temperature, seed, stop):
        self.calls.append((list(prompts), seed, list(stop)))
        return [self.text for _ in prompts]


def test_prompts_and_stop_rules(data_dir):
    builder, tok = _builder(), _builder().tokenizer
    he, single = get_benchmark("humaneval"), get_benchmark("humaneval-infill-single")
    p = he.problems(data_dir)[0]
    assert prompt_for(builder, he, p).ids == tok.encode(p.prompt, add_bos=True)
    q = single.problems(data_dir)[0]
    for mode in ("psm", "spm"):
        got = prompt_for(builder, single, q, mode, max_new_tokens=64)
        assert got.ids == tok.encode(render_fim(q.prompt, q.suffix, mode=mode), add_bos=True)
        assert got.max_new_tokens == 64
    assert postprocess(he, "    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert postprocess(he, "    x = 1\n# trailing\n") == "    x = 1"
    assert postprocess(single, "    y = 2\n    z = 3\n") == "    y = 2\n"
    # the engine stopped at the first newline and dropped it: the line is terminated again
    assert postprocess(single, "    y = 2") == "    y = 2\n"
    assert postprocess(single, "    y = 2<|file_separator|>junk") == "    y = 2\n"
    mbpp = get_benchmark("mbpp")
    m = mbpp.problems(data_dir)[0]
    assert m.prompt.startswith('"""\n') and "assert " in m.prompt
    assert postprocess(mbpp, "def f():\n    return 1\n\ndef g():\n    return f()\nassert f() == 1") \
        == "def f():\n    return 1\n\ndef g():\n    return f()"


def test_single_line_infilling_stops_at_the_first_newline(data_dir, tmp_path):
    single, multi = get_benchmark("humaneval-infill-single"), get_benchmark("humaneval-infill-multi")
    for bench, stops_at_newline in ((single, True), (multi, False)):
        model = EchoModel("    x = 1")
        generate_samples(model, bench, bench.problems(data_dir)[:2], tmp_path / f"{bench.name}.jsonl")
        assert ("\n" in model.calls[0][2]) == stops_at_newline
        assert "<|file_separator|>" in model.calls[0][2]
    rows = [json.loads(line) for line in open(tmp_path / f"{single.name}.jsonl")]
    assert {r["completion"] for r in rows} == {"    x = 1\n"}


def test_brace_languages_end_at_the_functions_closing_brace():
    csharp, go = get_benchmark("mxeval-humaneval-csharp"), get_benchmark("mbxp-go")
    assert postprocess(csharp, "\n            return 1;\n        }\n\n        static int G() {}\n") \
        == "\n            return 1;\n        }\n"
    assert postprocess(go, "\treturn 1\n}\n\nfunc other() {}\n") == "\treturn 1\n}\n"
    assert postprocess(go, "}\nfunc other() {}") == "}\n"  # an empty body
    assert postprocess(go, "\treturn 1\n") == "\treturn 1\n"  # ran out before the brace


def test_generation_resumes_and_repairs_a_torn_line(data_dir, tmp_path):
    bench = get_benchmark("humaneval")
    problems = bench.problems(data_dir)[:3]
    out = tmp_path / "samples.jsonl"
    model = EchoModel("    return 1\n")
    generate_samples(model, bench, problems, out, n_samples=2, temperature=0.8, batch_size=4)
    assert load_done(out) == {p.task_id: 2 for p in problems}
    assert sorted({seed for _, seed, _ in model.calls}) == [0, 1]  # sample j uses seed + j
    first = out.read_bytes()
    generate_samples(EchoModel("unused"), bench, problems, out, n_samples=2)
    assert out.read_bytes() == first  # nothing left to do
    with open(out, "ab") as fh:
        fh.write(b'{"task_id": "HumanEval/0", "compl')  # a run killed mid-write
    assert load_done(out) == {p.task_id: 2 for p in problems}
    assert out.read_bytes() == first
    more = EchoModel("    return 2\n")
    generate_samples(more, bench, problems, out, n_samples=3, batch_size=9)
    assert load_done(out) == {p.task_id: 3 for p in problems}
    assert out.read_bytes().startswith(first)
    assert [seed for _, seed, _ in more.calls] == [2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "debug"
    made = subprocess.run([sys.executable, "-m", "codegemma", "init", "--preset", "debug",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"`codegemma init --preset debug` is not available: {made.stderr[-300:]}")
    return out


@pytest.mark.parametrize("bench_name", ["humaneval", "humaneval-infill-single"])
def test_eval_run_end_to_end_on_a_tiny_model(tiny_model, data_dir, tmp_path, bench_name):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "codegemma", "eval", "run", "--model", str(tiny_model),
            "--benchmark", bench_name, "--out", str(out), "--limit", "3", "--n-samples", "2",
            "--temperature", "0.8", "--max-new-tokens", "8", "--data-dir", str(data_dir),
            "--k", "1,2", "--device", "cpu"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"pass@1", "pass@2"} and summary["samples"] == 6
    for name in ("samples.jsonl", "results.jsonl", "summary.json", "report.md", "pass_rate.png"):
        assert (out / name).stat().st_size > 0
    results = [json.loads(line) for line in open(out / "results.jsonl")]
    assert len(results) == 6 and all("passed" in r and "result" in r for r in results)
    if bench_name != "humaneval":
        return  # resuming is the same code for every benchmark; check it once
    before = (out / "samples.jsonl").read_bytes()
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "samples.jsonl").read_bytes() == before  # resumed: nothing regenerated


def eval_run(*args):
    return subprocess.run([sys.executable, "-m", "codegemma", "eval", "run", *args],
                          capture_output=True, text=True, timeout=600)


def test_a_rerun_resumes_only_the_same_model_and_settings(tiny_model, data_dir, tmp_path):
    """The bug this guards: a debug model's samples reported as the built-in model's score."""
    out = tmp_path / "run"
    common = ["--benchmark", "humaneval", "--out", str(out), "--limit", "2", "--k", "1",
              "--data-dir", str(data_dir), "--device", "cpu"]
    first = eval_run("--model", str(tiny_model), "--max-new-tokens", "4", *common)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    record = rows[0]["run"]
    assert all(r["run"] == record for r in rows)
    assert record["model"] == str(tiny_model.resolve()) and len(record["model_sha256"]) == 64
    assert record["max_new_tokens"] == 4 and record["fim_mode"] is None
    assert json.loads((out / "summary.json").read_text())["run"] == record
    assert record["model_sha256"] in (out / "report.md").read_text()
    before = (out / "samples.jsonl").read_bytes()

    for refused in (["--max-new-tokens", "4"],  # the built-in model (the default)
                    ["--model", str(tiny_model), "--max-new-tokens", "8"],
                    ["--model", str(tiny_model), "--max-new-tokens", "4", "--seed", "1"]):
        again = eval_run(*refused, *common)
        assert again.returncode == 2, again.stdout[-500:]
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr
        assert "--overwrite" in again.stderr and "another run" in again.stderr
        assert (out / "samples.jsonl").read_bytes() == before
    assert "model_sha256" in eval_run("--max-new-tokens", "4", *common).stderr

    same = eval_run("--model", str(tiny_model), "--max-new-tokens", "4", *common)
    assert same.returncode == 0 and (out / "samples.jsonl").read_bytes() == before

    fresh = eval_run("--max-new-tokens", "4", "--overwrite", *common)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert len(rows) == 2 and all(r["run"]["model"].endswith("nano") for r in rows)
    assert rows[0]["run"]["model_sha256"] != record["model_sha256"]
    assert json.loads((out / "summary.json").read_text())["run"] == rows[0]["run"]


def test_eval_run_suite_prints_one_table_with_languages_as_columns(tiny_model, data_dir, tmp_path):
    out = tmp_path / "suite"
    done = eval_run("--model", str(tiny_model), "--suite", "multilingual-humaneval", "--out",
                    str(out), "--limit", "1", "--max-new-tokens", "4", "--k", "1",
                    "--data-dir", str(data_dir), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("multilingual-humaneval:"))
    assert lines[header].split()[-8:] == ["C++", "C#", "Go", "Java", "JavaScript", "Kotlin",
                                          "Python", "Rust"]
    cells = lines[header + 1].split()
    assert cells[0] == "HumanEval" and len(cells) == 9
    assert all(c == "n/a" or 0.0 <= float(c) <= 100.0 for c in cells[1:])
    summary = json.loads(lines[-1])
    for name, result in summary["benchmarks"].items():
        if "skipped" in result:
            assert "apt-get install" in result["skipped"]
            continue
        assert result["samples"] == 1 and result["run"]["benchmark"] == name
        assert len((out / name / "samples.jsonl").read_text().splitlines()) == 1
    for suffix in (".md", ".json", ".png"):
        assert (out / f"multilingual-humaneval{suffix}").stat().st_size > 0
