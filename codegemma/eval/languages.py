"""Runners for the languages other than Python: how a sample's program is compiled and run.

Each runner turns (code, test) into files and steps for `Sandbox.run_steps`: a compile step with
its own time limit (a cold compiler on a busy machine takes seconds; the HumanEval-X and MxEval
harnesses also time compilation apart), then one run step with the benchmark's per-sample time.
Every step runs under the sandbox's usual limits (2 GiB of address space per process included:
the JVM and V8 are told to fit in it).

The test's own entry point is renamed and called from an epilogue that, after the tests returned,
reads the nonce from stdin and prints "PASS <nonce>" last; exiting early (exit(0), System.exit(0),
process.exit(0), os.Exit(0)) therefore fails. Unlike the Python path, the sample's code runs in
the same process as that epilogue with stdin readable, so a sample written to read stdin can forge
the marker: the score is less tamper-proof for these languages, the host isolation is the same.

Libraries the benchmarks' tests use come from Debian packages (`packages`), or from a support
folder prepared once per machine from them (`codegemma.eval.toolchains`) and mounted read-only
at SUPPORT_MOUNT: Rust's rand/regex/md5 built offline from /usr/share/cargo/registry, a Go build
cache holding testify, a precompiled <bits/stdc++.h>, and stand-ins for two libraries Debian
does not ship (C#'s Compare-Net-Objects, Node's js-md5).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable

from codegemma.eval.sandbox import SANDBOX_PATH

SUPPORT_MOUNT = "/run/codegemma-support"
COMPILE_TIMEOUT_S = 60.0
KOTLIN_COMPILE_TIMEOUT_S = 120.0  # kotlinc starts a large JVM compiler: ~3 s alone, far more when busy
JVM_START_S = 2.0                 # added to the run time of JVM programs
# The JVM reserves 1 GiB of class space and 240 MiB of code cache by default; sized down, a
# compiler or test fits in the sandbox's 2 GiB address-space limit. Deep recursion in tests gets
# 16 MiB thread stacks; compilers keep the default (their many threads would not fit).
JVM_FLAGS = ("-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-XX:CompressedClassSpaceSize=128m", "-XX:ReservedCodeCacheSize=64m",
             "-XX:MaxMetaspaceSize=256m")
JVM_RUN_FLAGS = (*JVM_FLAGS, "-Xss16m")
THREADS = {"processes": 256}  # RLIMIT_NPROC counts threads: JVMs, Go and Mono start dozens
NODE_PATHS = ("/usr/share/nodejs", "/usr/lib/nodejs", "/usr/lib/node_modules",
              "/usr/local/lib/node_modules")
GOPATH = "/usr/share/gocode"      # Debian's golang-*-dev packages (testify) install here
CARGO_REGISTRY = "/usr/share/cargo/registry"
RUST_CRATES = ("rand", "regex", "md5")
CPP_FLAGS = ("-std=c++17", "-O0", "-w")  # -w: a compile error is not buried under warnings


@dataclass(frozen=True)
class Runner:
    language: str
    title: str
    tools: tuple[str, ...]          # executables the sandbox must find on its PATH
    packages: str                   # Debian/Ubuntu packages: apt-get install <packages>
    build: Callable | None = None   # (code, test, run timeout, support dir) -> (files, steps, limits)
    check: Callable[[], str | None] | None = None  # libraries outside PATH: None or what is missing
    needs_proc: bool = False        # the JVM, Mono and rustc (its sysroot) read /proc


def sample_macros(code: str) -> list[str]:
    """Names the C/C++ `code` #defines (after line splicing and comments, digraphs too): the
    test, compiled after it in one unit, must not see them (`#define assert(x)`)."""
    code = re.sub(r"\\\r?\n", "", code)
    code = re.sub(r"/\*.*?\*/|//[^\n]*", " ", code, flags=re.S)
    return sorted(set(re.findall(r"^[ \t]*(?:#|%:)[ \t]*define[ \t]+([A-Za-z_]\w*)", code,
                                 flags=re.M)))


def _rename(pattern: str, replacement: str, text: str) -> tuple[str, re.Match | None]:
    match = re.search(pattern, text)
    if match is None:
        return text, None
    return text[:match.start()] + match.expand(replacement) + text[match.end():], match


def _has_args(match: re.Match | None) -> bool:
    return bool(match and match.group(1).strip() not in ("", "void"))


def _cpp(code: str, test: str, timeout: float, support: str):
    test, main = _rename(r"\bint\s+main\s*\(([^)]*)\)", r"int codegemma_test_main(\1)", test)
    call = "codegemma_test_main(argc, argv)" if _has_args(main) else "codegemma_test_main()"
    # The sample's macros end where the test begins, and assert is the real one again.
    reset = "".join(f"\n#undef {name}" for name in sample_macros(code + "\n"))
    test = reset + "\n#undef NDEBUG\n#include <cassert>\n" + test
    epilogue = ("\n#include <iostream>\n#include <string>\n"
                f"int main(int argc, char** argv) {{ {call}; std::string n; std::getline(std::cin, n);"
                " std::cout << std::endl << \"PASS \" << n << std::endl; return 0; }\n")
    program = code + "\n" + test + epilogue
    libs = ["-lcrypto"] if "openssl/" in program else []  # HumanEval-X CPP/162 (md5)
    # -O0: HumanEval-X's test main may fall off its end without `return` (legal only in main);
    # optimising that undefined behaviour can crash correct programs. -I: the precompiled
    # <bits/stdc++.h> (toolchains.py), found before the header itself.
    steps = [{"kind": "compile", "argv": ["g++", *CPP_FLAGS, "-I", support, "-o", "prog",
                                          "main.cpp", *libs], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["./prog"], "timeout": timeout}]
    return {"main.cpp": program}, steps, {}


def _js(code: str, test: str, timeout: float, support: str):
    # HumanEval-X's JS tests use console.assert, which only logs: theirs call a constant of
    # ours that throws, which the sample can neither reassign nor shadow.
    prelude = ("const codegemmaAssert = (c, ...m) => { if (!c) { throw new Error("
               "'Assertion failed ' + m.join(' ')); } };\nconsole.assert = codegemmaAssert;\n")
    test = re.sub(r"\bconsole\.assert\s*\(", "codegemmaAssert(", test)
    epilogue = ("\n;(() => { const n = require('fs').readFileSync(0, 'utf8').trim();"
                " process.stdout.write('\\nPASS ' + n + '\\n'); })();\n")
    node_path = ":".join((support, *NODE_PATHS))  # lodash (MBXP) from Debian; js-md5 stand-in
    steps = [{"kind": "run", "argv": ["env", f"NODE_PATH={node_path}", "node",
                                      "--max-old-space-size=512", "main.js"], "timeout": timeout}]
    return {"main.js": prelude + code + "\n" + test + epilogue}, steps, THREADS


def _java(code: str, test: str, timeout: float, support: str):
    test, _ = _rename(r"public\s+static\s+void\s+main\s*\(\s*String\s*\[\]\s*(\w+)\s*\)",
                      r"public static void codegemmaTestMain(String[] \1)", test)
    epilogue = ("\nclass CodegemmaRunner {\n  public static void main(String[] a) throws Exception {\n"
                "    Main.codegemmaTestMain(a);\n"
                "    String n = new java.io.BufferedReader(new java.io.InputStreamReader(System.in))"
                ".readLine();\n    System.out.println();\n    System.out.println(\"PASS \" + n);\n"
                "    System.out.flush();\n  }\n}\n")
    steps = [{"kind": "compile", "argv": ["javac", *(f"-J{f}" for f in JVM_FLAGS), "-nowarn",
                                          "Main.java"], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["java", *JVM_RUN_FLAGS, "-cp", ".", "CodegemmaRunner"],
              "timeout": timeout + JVM_START_S}]
    return {"Main.java": code + "\n" + test + epilogue}, steps, THREADS


def _kotlin(code: str, test: str, timeout: float, support: str):
    test, main = _rename(r"\bfun\s+main\s*\(([^)]*)\)", r"fun codegemmaTestMain(\1)", test)
    call = "codegemmaTestMain(arrayOf())" if _has_args(main) else "codegemmaTestMain()"
    epilogue = (f"\nfun main() {{\n    {call}\n    val n = readLine()\n    println()\n"
                "    println(\"PASS \" + n)\n}\n")
    steps = [{"kind": "compile", "argv": ["env", "JAVA_OPTS=" + " ".join(JVM_FLAGS), "kotlinc",
                                          "-nowarn", "-jvm-target", "1.8", "main.kt", "-d", "out"],
              "timeout": KOTLIN_COMPILE_TIMEOUT_S},  # JAVA_OPTS: read by the kotlinc script
             {"kind": "run", "argv": ["env", "JAVA_OPTS=" + " ".join(JVM_RUN_FLAGS), "kotlin",
                                      "-cp", "out", "MainKt"], "timeout": timeout + JVM_START_S}]
    return {"main.kt": code + "\n" + test + epilogue}, steps, THREADS


def _csharp(code: str, test: str, timeout: float, support: str):
    test, main = _rename(r"\bstatic\s+void\s+Main\s*\(([^)]*)\)",
                         r"static void CodegemmaTestMain(\1)", test)
    owner = "Program"
    if main is not None:  # the class that holds the test's Main (comments may say "class")
        before = re.sub(r"//[^\n]*|/\*.*?\*/", "", code + "\n" + test[:main.start()], flags=re.S)
        classes = re.findall(r"\bclass\s+(\w+)", before)
        namespace = re.search(r"\bnamespace\s+([\w.]+)", before)
        owner = (namespace.group(1) + "." if namespace else "") + (classes[-1] if classes else owner)
    call = f"global::{owner}.CodegemmaTestMain({'a' if _has_args(main) else ''})"
    epilogue = ("\nclass CodegemmaRunner {\n    static void Main(string[] a) {\n"
                f"        {call};\n        var n = System.Console.ReadLine();\n"
                "        System.Console.WriteLine();\n        System.Console.WriteLine(\"PASS \" + n);\n"
                "    }\n}\n")
    library = f"{support}/KellermanSoftware.CompareNetObjects.dll"
    steps = [{"kind": "compile", "argv": ["mcs", "-nologo", "-warn:0", "-main:CodegemmaRunner",
                                          "-r:System.Numerics.dll", f"-r:{library}",
                                          "-out:prog.exe", "main.cs"], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["env", f"MONO_PATH={support}", "mono", "prog.exe"],
              "timeout": timeout}]
    return {"main.cs": code + "\n" + test + epilogue}, steps, THREADS


def go_env(support: str) -> list[str]:
    """The Go environment of every build, in the sandbox and when the cache is prepared alike
    (the same settings make the prepared build cache hit). GOPATH mode: testify from Debian."""
    return [f"GOCACHE={support}/gocache", "GO111MODULE=off", f"GOPATH={GOPATH}",
            "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off", "GOTELEMETRY=off"]


GO_TEST_MAIN = """package main

import (
	"bufio"
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		n, _ := bufio.NewReader(os.Stdin).ReadString('\\n')
		fmt.Print("\\nPASS " + n)
	}
	os.Exit(code)
}
"""
GO_MAIN = """package main

import (
	"bufio"
	"fmt"
	"os"
)

func main() {
	codegemmaTestMain()
	n, _ := bufio.NewReader(os.Stdin).ReadString('\\n')
	fmt.Print("\\nPASS " + n)
}
"""


def _go(code: str, test: str, timeout: float, support: str):
    env = ["env", *go_env(support)]
    if "*testing.T" in test:  # HumanEval-X: `go test` functions with testify's assert
        files = {"main_test.go": code + "\n" + test, "codegemma_test.go": GO_TEST_MAIN}
        build = ["go", "test", "-c", "-o", "prog", "main_test.go", "codegemma_test.go"]
    else:  # MBXP: a program whose main runs the checks
        test, _ = _rename(r"\bfunc\s+main\s*\(\s*\)", "func codegemmaTestMain()", test)
        files = {"main.go": code + "\n" + test, "codegemma_main.go": GO_MAIN}
        build = ["go", "build", "-o", "prog", "main.go", "codegemma_main.go"]
    steps = [{"kind": "compile", "argv": [*env, *build], "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["./prog"], "timeout": timeout}]
    return files, steps, THREADS


def _rust(code: str, test: str, timeout: float, support: str):
    # HumanEval-X's tests are `#[test]` functions in a `#[cfg(test)]` module. They are compiled
    # as plain functions and called in order from that module (they are private to it), so the
    # program's own main can print the marker after the last one returned. A test module that
    # upstream commented out (Rust/32) runs nothing: the program passes if it compiles, as it
    # does under `cargo test`.
    body = re.sub(r"/\*.*?\*/", "", test, flags=re.S)
    module = re.search(r"\bmod\s+(\w+)\s*\{", body)
    names = re.findall(r"#\[test\]\s*(?:#\[[^\]]*\]\s*)*fn\s+(\w+)", body)
    body = re.sub(r"#\[(?:cfg\(test\)|test)\]", "", body)
    end = body.rstrip().rfind("}")
    run_tests = ""
    if module and end > module.end():
        calls = "".join(f"        {name}();\n" for name in names)
        body = (body[:end] + f"\n    pub fn codegemma_run_tests() {{\n{calls}    }}\n"
                + body[end:])
        run_tests = f"    {module.group(1)}::codegemma_run_tests();\n"
    epilogue = (f"\nfn main() {{\n{run_tests}"
                "    let mut n = String::new();\n    std::io::stdin().read_line(&mut n).unwrap();\n"
                "    println!(\"\\nPASS {}\", n.trim_end());\n}\n")
    externs = [arg for crate in RUST_CRATES
               for arg in ("--extern", f"{crate}={support}/extern/lib{crate}.rlib")]
    steps = [{"kind": "compile", "argv": ["rustc", "--edition", "2021", "-C", "opt-level=0",
                                          "-C", "debuginfo=0", "-C", "strip=debuginfo",
                                          "-A", "warnings", "-L", f"dependency={support}/deps",
                                          *externs, "-o", "prog", "main.rs"],
              "timeout": COMPILE_TIMEOUT_S},
             {"kind": "run", "argv": ["./prog"], "timeout": timeout}]
    return {"main.rs": code + "\n" + body + epilogue}, steps, THREADS


def _node_lodash() -> str | None:
    if any(os.path.isdir(os.path.join(d, "lodash")) for d in NODE_PATHS):
        return None
    return "needs the Node module lodash (MBXP's tests use it)"


def _go_testify() -> str | None:
    if os.path.isdir(os.path.join(GOPATH, "src/github.com/stretchr/testify/assert")):
        return None
    return f"needs testify in {GOPATH} (HumanEval-X's Go tests use it)"


def _rust_crates() -> str | None:
    absent = [c for c in RUST_CRATES if not glob.glob(os.path.join(CARGO_REGISTRY, f"{c}-[0-9]*"))]
    if not absent:
        return None
    return f"needs the crates {', '.join(absent)} in {CARGO_REGISTRY} (HumanEval-X's Rust tests use them)"


RUNNERS = {r.language: r for r in (
    Runner("cpp", "C++", ("g++",), "g++ libssl-dev libboost-dev", _cpp),
    Runner("csharp", "C#", ("mcs", "mono"), "mono-mcs", _csharp, needs_proc=True),
    Runner("go", "Go", ("go",), "golang-go golang-github-stretchr-testify-dev", _go,
           check=_go_testify),
    Runner("java", "Java", ("javac", "java"), "default-jdk-headless", _java, needs_proc=True),
    Runner("js", "JavaScript", ("node",), "nodejs node-lodash", _js, check=_node_lodash),
    Runner("kotlin", "Kotlin", ("kotlinc", "kotlin", "java"), "kotlin", _kotlin, needs_proc=True),
    Runner("python", "Python", (), "python3"),
    Runner("rust", "Rust", ("rustc", "cargo"),
           "rustc cargo librust-rand-dev librust-regex-dev librust-md5-dev", _rust,
           check=_rust_crates, needs_proc=True),
)}
# What `.ci/run` and the README install: every package above.
PACKAGES = " ".join(dict.fromkeys(p for r in RUNNERS.values() for p in r.packages.split()
                                  if p != "python3"))


def missing_reason(runner: Runner, absent: list[str], elsewhere: dict[str, str],
                   library: str | None) -> str | None:
    """The one line `eval list` shows for a language that cannot run, or None."""
    if not absent and library is None:
        return None
    parts = []
    for tool in absent:
        where = (f" (only {elsewhere[tool]}, outside the sandbox's PATH {SANDBOX_PATH})"
                 if tool in elsewhere else "")
        parts.append(f"{tool}{where}")
    what = f"needs {', '.join(parts)}" if parts else library
    if parts and library:
        what += f"; {library}"
    return f"{what}: apt-get install {runner.packages}"


def missing(language: str) -> str | None:
    """None when samples in `language` can run here, else why not and which packages to install.
    Tools are looked up on the sandbox's PATH, where samples will look for them."""
    runner = RUNNERS.get(language)
    if runner is None:
        return f"no sandbox runner for {language}"
    absent = [t for t in runner.tools if shutil.which(t, path=SANDBOX_PATH) is None]
    elsewhere = {t: shutil.which(t) for t in absent if shutil.which(t)}
    library = runner.check() if runner.check and not absent else None
    return missing_reason(runner, absent, elsewhere, library)
