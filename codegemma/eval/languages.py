"""Runners for the multilingual sets: how a program in another language is built and run.

Each runner turns (code, test) into files and steps for `Sandbox.run_steps`. The test's own
entry point is renamed and called from an epilogue that, after the tests returned, reads the
nonce from stdin and prints "PASS <nonce>" last; exiting early (exit(0), System.exit(0),
process.exit(0)) therefore fails. Unlike the Python path, the sample's code runs in the same
process as that epilogue with stdin readable, so a sample written to read stdin can forge the
marker: the score is less tamper-proof for these languages, the host isolation is the same.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import Callable

COMPILE_TIMEOUT_S = 60.0
UNLIMITED_MEMORY = {"memory_bytes": 0}  # JVM and V8 reserve far more address space than they use


@dataclass(frozen=True)
class Runner:
    language: str
    tools: tuple[str, ...]                       # executables that must be on PATH
    build: Callable[[str, str, float], tuple[dict, list, dict]]


def sample_macros(code: str) -> list[str]:
    """Names the C/C++ `code` #defines (after line splicing and comments, digraphs too): the
    test, compiled after it in one unit, must not see them (`#define assert(x)`)."""
    code = re.sub(r"\\\r?\n", "", code)
    code = re.sub(r"/\*.*?\*/|//[^\n]*", " ", code, flags=re.S)
    return sorted(set(re.findall(r"^[ \t]*(?:#|%:)[ \t]*define[ \t]+([A-Za-z_]\w*)", code,
                                 flags=re.M)))


def _cpp(code: str, test: str, timeout: float):
    test = re.sub(r"\bint\s+main\s*\(\s*\)", "int codegemma_test_main()", test, count=1)
    # The sample's macros end where the test begins, and assert is the real one again.
    reset = "".join(f"\n#undef {name}" for name in sample_macros(code + "\n"))
    test = reset + "\n#undef NDEBUG\n#include <cassert>\n" + test
    epilogue = ("\n#include <iostream>\n#include <string>\n"
                "int main() { codegemma_test_main(); std::string n; std::getline(std::cin, n);"
                " std::cout << std::endl << \"PASS \" << n << std::endl; return 0; }\n")
    files = {"main.cpp": code + "\n" + test + epilogue}
    # -O0: the renamed test main may fall off its end without `return` (legal only in main);
    # optimising that undefined behaviour can crash correct programs.
    steps = [{"kind": "compile", "argv": ["g++", "-std=c++17", "-O0", "-o", "prog", "main.cpp",
                                          "-lcrypto"], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["./prog"], "timeout": timeout}]
    return files, steps, {}


def _js(code: str, test: str, timeout: float):
    # HumanEval-X's JS tests use console.assert, which only logs: theirs call a constant of
    # ours that throws, which the sample can neither reassign nor shadow.
    prelude = ("const codegemmaAssert = (c, ...m) => { if (!c) { throw new Error("
               "'Assertion failed ' + m.join(' ')); } };\nconsole.assert = codegemmaAssert;\n")
    test = re.sub(r"\bconsole\.assert\s*\(", "codegemmaAssert(", test)
    epilogue = ("\n;(() => { const n = require('fs').readFileSync(0, 'utf8').trim();"
                " process.stdout.write('\\nPASS ' + n + '\\n'); })();\n")
    files = {"main.js": prelude + code + "\n" + test + epilogue}
    steps = [{"kind": "run", "argv": ["node", "--max-old-space-size=512", "main.js"],
              "timeout": timeout}]
    return files, steps, {**UNLIMITED_MEMORY, "processes": 256}


def _java(code: str, test: str, timeout: float):
    test = re.sub(r"public\s+static\s+void\s+main\s*\(\s*String\s*\[\]\s*(\w+)\s*\)",
                  r"public static void codegemmaTestMain(String[] \1)", test, count=1)
    epilogue = ("\nclass CodegemmaRunner {\n  public static void main(String[] a) throws Exception {\n"
                "    Main.codegemmaTestMain(a);\n"
                "    String n = new java.io.BufferedReader(new java.io.InputStreamReader(System.in))"
                ".readLine();\n    System.out.println();\n    System.out.println(\"PASS \" + n);\n"
                "    System.out.flush();\n  }\n}\n")
    files = {"Main.java": code + "\n" + test + epilogue}
    jvm = ["-Xmx512m", "-Xss16m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    steps = [{"kind": "compile", "argv": ["javac", "-J-Xmx512m", "-J-XX:+UseSerialGC",
                                          "Main.java"], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["java", *jvm, "-cp", ".", "CodegemmaRunner"],
              "timeout": timeout + 2.0}]  # + JVM start-up
    return files, steps, {**UNLIMITED_MEMORY, "processes": 512}


RUNNERS = {
    "cpp": Runner("cpp", ("g++",), _cpp),
    "js": Runner("js", ("node",), _js),
    "java": Runner("java", ("javac", "java"), _java),
}
# Registered but not runnable here, with the reason `eval list` shows.
NOT_RUNNABLE = {
    "rust": "HumanEval-X Rust tests need the crates rand, regex and md5 (a cargo project)",
}
TOOLCHAINS = {"go": "go", "rust": "rustc", "csharp": "dotnet", "kotlin": "kotlinc"}


def missing(language: str) -> str | None:
    """None when samples in `language` can run here, else the reason."""
    if language == "python":
        return None
    runner = RUNNERS.get(language)
    if runner is None:
        if language in NOT_RUNNABLE:
            return NOT_RUNNABLE[language]
        tool = TOOLCHAINS.get(language, language)
        state = "installed" if shutil.which(tool) else "not installed"
        return f"no sandbox runner for {language} ({tool} {state})"
    absent = [t for t in runner.tools if shutil.which(t) is None]
    return f"needs {', '.join(absent)} (not installed)" if absent else None
