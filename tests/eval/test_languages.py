"""Every multilingual benchmark, a handful of tasks each, in the real sandbox with the real
toolchains: reference solutions pass; a wrong answer, an early successful exit and a compile
error fail. A language whose toolchain is missing is skipped with what to install."""

import pytest

from codegemma.eval import harness, languages, toolchains
from codegemma.eval.registry import BENCHMARKS, KNOWN_BAD_REFERENCES, get_benchmark

# Benchmarks without reference solutions upstream get hand-written ones (task id -> completion).
HAND_WRITTEN = {
    "mxeval-humaneval-csharp": {
        "HumanEval_csharp/0": "\n            for (int i = 0; i < numbers.Count; i++)\n"
                              "                for (int j = i + 1; j < numbers.Count; j++)\n"
                              "                    if (Math.Abs(numbers[i] - numbers[j]) < threshold)\n"
                              "                        return true;\n            return false;\n        }\n",
        "HumanEval_csharp/3": "\n            int balance = 0;\n            foreach (int op in operations)\n"
                              "            {\n                balance += op;\n"
                              "                if (balance < 0)\n                    return true;\n"
                              "            }\n            return false;\n        }\n",
    },
    "mxeval-humaneval-kotlin": {
        "HumanEval_kotlin/0": "    for (i in numbers.indices) for (j in i + 1 until numbers.size)\n"
                              "        if (Math.abs(numbers[i] - numbers[j]) < threshold) return true\n"
                              "    return false\n}\n",
        "HumanEval_kotlin/3": "    var balance = 0\n    for (op in operations) {\n"
                              "        balance += op as Int\n        if (balance < 0) return true\n"
                              "    }\n    return false\n}\n",
    },
    "mbxp-go": {
        "MBGP/3": "\tfor i := 2; i <= int(math.Sqrt(float64(n))); i++ {\n\t\tif n%i == 0 {\n"
                  "\t\t\treturn true\n\t\t}\n\t}\n\treturn false\n}\n",
        "MBGP/5": "\ta := make([]int, n+2)\n\tb := make([]int, n+2)\n\ta[0], b[1] = 1, 1\n"
                  "\tfor i := 2; i <= n; i++ {\n\t\ta[i] = a[i-2] + 2*b[i-1]\n"
                  "\t\tb[i] = a[i-1] + b[i-2]\n\t}\n\treturn a[n]\n}\n",
    },
}
# benchmark -> (task for the failing samples, a wrong answer that compiles, an early exit line
# put before a correct body; None where the language cannot exit without an import)
FAILING = {
    "humaneval-x-cpp": ("CPP/0", "    return false;\n}\n", "    exit(0);\n"),
    "humaneval-x-java": ("Java/0", "        return false;\n    }\n}\n", "        System.exit(0);\n"),
    "humaneval-x-js": ("JavaScript/0", "  return false\n}\n", "  process.exit(0);\n"),
    "humaneval-x-go": ("Go/0", "    return false\n}\n", None),
    "humaneval-x-rust": ("Rust/0", "    return false;\n}\n", "    std::process::exit(0);\n"),
    "mxeval-humaneval-csharp": ("HumanEval_csharp/3", "\n            return true;\n        }\n",
                                "\n            System.Environment.Exit(0);"),
    "mxeval-humaneval-kotlin": ("HumanEval_kotlin/3", "    return true\n}\n",
                                "    kotlin.system.exitProcess(0)\n"),
    "mbxp-python": ("MBPP/1", "\treturn 0\n", "\traise SystemExit(0)\n"),
    "mbxp-cpp": ("MBCPP/3", "return false;\n}\n", "exit(0);\n"),
    "mbxp-csharp": ("MBCSP/3", "\n            return false;\n        }\n",
                    "\n            System.Environment.Exit(0);"),
    "mbxp-go": ("MBGP/5", "\treturn 0\n}\n", None),
    "mbxp-java": ("MBJP/1", "        return 0;\n    }\n}\n", "        System.exit(0);\n"),
    "mbxp-js": ("MBJSP/1", "    return 0;\n}\n", "    process.exit(0);\n"),
    "mbxp-kotlin": ("MBKP/1", "    return 0\n}\n", "    kotlin.system.exitProcess(0)\n"),
}
NOT_CODE = "\n    this is not a program in any of these languages )(\n}\n"


def usable(name, data_dir):
    bench = get_benchmark(name)
    why = bench.runnable()
    if why:
        pytest.skip(f"{name}: {why}")
    if not bench.data_present(data_dir):
        pytest.skip(f"{name}: no data in {data_dir}")
    return bench, bench.problems(data_dir)


@pytest.mark.parametrize("name", sorted(FAILING))
def test_references_pass_and_wrong_samples_fail(name, data_dir):
    bench, problems = usable(name, data_dir)
    by_id = {p.task_id: p for p in problems}
    good = HAND_WRITTEN.get(name) or {p.task_id: p.canonical_solution for p in problems
                                      if p.canonical_solution is not None
                                      and p.task_id not in KNOWN_BAD_REFERENCES.get(name, {})}
    slow = bench.language == "kotlin"  # kotlinc takes seconds a compile: fewer samples
    correct = list(good.items())[:2 if slow else 3]
    task, wrong, early_exit = FAILING[name]
    body = good.get(task) or by_id[task].canonical_solution
    samples = [{"task_id": t, "completion": c} for t, c in correct]
    samples += [{"task_id": task, "completion": wrong}]
    if not slow:
        samples.append({"task_id": task, "completion": NOT_CODE})
    if early_exit:
        samples.append({"task_id": task, "completion": early_exit + body})
    results = harness.score(bench, problems, samples, timeout_s=bench.timeout_s, workers=2,
                            progress=False)
    outcome = [(r["task_id"], r["passed"], r["result"][:200]) for r in results]
    assert [r["passed"] for r in results[:len(correct)]] == [True] * len(correct), outcome
    assert not any(r["passed"] for r in results[len(correct):]), outcome
    if not slow:
        compiled = bench.language not in ("python", "js")
        assert ("compile error" if compiled else "failed") in results[len(correct) + 1]["result"]
    if early_exit:
        assert "exited early" in results[-1]["result"], outcome


def test_the_support_folder_is_read_only_for_samples(data_dir):
    """A sample cannot change what the next sample links against (here: JS's js-md5)."""
    bench, problems = usable("humaneval-x-js", data_dir)
    p = next(p for p in problems if p.task_id == "JavaScript/162")
    tamper = ("  const fs = require('fs')\n"
              "  for (const d of process.env.NODE_PATH.split(':')) {\n"
              "    try { fs.writeFileSync(d + '/js-md5.js', 'module.exports = () => null') }"
              " catch (e) {}\n  }\n") + p.canonical_solution
    samples = [{"task_id": p.task_id, "completion": c} for c in (tamper, p.canonical_solution)]
    results = harness.score(bench, problems, samples, workers=1, progress=False)
    assert [r["passed"] for r in results] == [True, True], results
    support = toolchains.support_dir("js")
    assert "crypto" in (support / "js-md5.js").read_text()


def test_every_language_names_its_packages():
    assert set(languages.RUNNERS) == {b.language for b in BENCHMARKS.values()}
    for runner in languages.RUNNERS.values():
        assert runner.packages and runner.title
        if runner.language != "python":
            assert runner.build is not None and runner.tools
    for package in ("golang-go", "mono-mcs", "kotlin", "rustc", "librust-rand-dev",
                    "librust-regex-dev", "librust-md5-dev", "g++", "nodejs"):
        assert package in languages.PACKAGES.split()


def test_a_missing_toolchain_says_which_package_installs_it():
    go = languages.RUNNERS["go"]
    reason = languages.missing_reason(go, ["go"], {}, None)
    assert reason == ("needs go: apt-get install golang-go golang-github-stretchr-testify-dev")
    rust = languages.RUNNERS["rust"]
    reason = languages.missing_reason(rust, ["rustc"], {"rustc": "/home/u/.cargo/bin/rustc"}, None)
    assert "/home/u/.cargo/bin/rustc" in reason and "sandbox's PATH" in reason
    assert reason.endswith("apt-get install " + rust.packages)
    assert languages.missing_reason(go, [], {}, None) is None
    assert "testify" in languages.missing_reason(go, [], {}, "needs testify in /usr/share/gocode")


def test_eval_list_shows_the_missing_toolchains_package(data_dir):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "codegemma", "eval", "list", "--data-dir",
                          str(data_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for language, runner in languages.RUNNERS.items():
        why = languages.missing(language)
        if why:
            assert f"{runner.title}: {why}" in out.stdout
            assert f"apt-get install {runner.packages}" in out.stdout
    table = out.stdout.split("\n\n")[0]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]
            if line.startswith(("mbxp-", "humaneval-x-", "mxeval-"))}
    assert {r for r in rows if r.startswith("mbxp-")} == {
        f"mbxp-{lang}" for lang in ("python", "cpp", "csharp", "go", "java", "js", "kotlin")}
    for name, row in rows.items():
        assert row[1] == str(BENCHMARKS[name].size) and row[3] == BENCHMARKS[name].language
        assert row[5] == ("no" if BENCHMARKS[name].runnable() else "yes")


def test_ci_installs_every_toolchain_package():
    from pathlib import Path
    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    listed = script.split('TOOLCHAINS="', 1)[1].split('"', 1)[0].split()
    assert sorted(listed) == sorted(languages.PACKAGES.split())
