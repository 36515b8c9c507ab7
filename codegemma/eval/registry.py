"""The benchmark registry: names, sizes, how records become problems and problems programs.

A program is what the sandbox runs for one sample: `code` (the model's text in its context),
then `test` (a separate compilation unit, so a completion cannot comment the tests out), then
`check(entry_point)` when the benchmark defines a check function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from codegemma.eval import datasets, languages

# Stop texts for left-to-right Python generation (Codex paper / human-eval practice).
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# MBPP completions start with their own `def`, so "\ndef " cannot stop them (helpers are allowed).
MBPP_STOP = ("\nclass ", "\nassert ", '\n"""', "\nprint(", "\nif __name__", "\n```")
MBPP_TEST_SPLIT = range(11, 511)  # task ids 11..510, the standard test split


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str                 # generation prompt, or the text before the hole
    canonical_solution: str     # the reference completion / middle
    test: str
    entry_point: str | None     # None: `test` is a list of plain asserts (MBPP)
    suffix: str = ""            # text after the hole (infilling); "" for left-to-right tasks
    include_prompt: bool = True  # whether `prompt` is part of the program (not for MBPP)
    language: str = "python"

    def program(self, completion: str) -> tuple[str, str, str | None]:
        """(code, test, entry_point) for the sandbox."""
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
                language=lang, stop=(), load=_humaneval_x(lang), timeout_s=10.0)
      for lang, title in (("cpp", "C++"), ("java", "Java"), ("js", "JavaScript"),
                          ("go", "Go"), ("rust", "Rust"))),
    Benchmark("mxeval-humaneval-csharp", "mxeval-csharp", 161, "Multi-HumanEval (MxEval), C#",
              language="csharp", stop=()),
    Benchmark("mxeval-humaneval-kotlin", "mxeval-kotlin", 161, "Multi-HumanEval (MxEval), Kotlin",
              language="kotlin", stop=()),
)}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: "
                         f"{', '.join(BENCHMARKS)} (see `codegemma eval list`)") from None
