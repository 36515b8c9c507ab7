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
    assert postprocess(single, "    y = 2<|file_separator|>junk") == "    y = 2"
    mbpp = get_benchmark("mbpp")
    m = mbpp.problems(data_dir)[0]
    assert m.prompt.startswith('"""\n') and "assert " in m.prompt
    assert postprocess(mbpp, "def f():\n    return 1\n\ndef g():\n    return f()\nassert f() == 1") \
        == "def f():\n    return 1\n\ndef g():\n    return f()"


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
