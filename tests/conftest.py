"""Shared fixtures: a small deterministic tokenizer and paths to the benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SAMPLE_CODE = '''import os
import sys


def add(a, b):
    """Return the sum of a and b."""
    return a + b


class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self):
        print(f"Hello, {self.name}!")
        return len(self.name)


if __name__ == "__main__":
    for i in range(10):
        print(add(i, i * 2))
'''


@pytest.fixture(scope="session")
def small_tokenizer_dir(tmp_path_factory) -> Path:
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer_files(train_bpe_tokenizer([SAMPLE_CODE] * 3, 512), out)
    return out


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    path = Path(os.environ.get("CODEGEMMA_DATA_DIR", REPO.parent / "shared" / "benchmarks"))
    if not path.is_dir():
        pytest.skip(f"benchmark data not found at {path} (set CODEGEMMA_DATA_DIR)")
    return path
