"""Shared fixtures: the benchmark data folder and one sandbox per test module."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """CI sets CODEGEMMA_DATA_DIR; otherwise the shared folder beside the repository."""
    path = Path(os.environ.get("CODEGEMMA_DATA_DIR") or REPO.parent / "shared" / "benchmarks")
    if not (path / "humaneval").is_dir():
        pytest.skip(f"benchmark data not found at {path} (set CODEGEMMA_DATA_DIR)")
    return path


@pytest.fixture(scope="module")
def sandbox():
    from codegemma.eval.sandbox import Sandbox, SandboxLimits, SandboxUnavailableError
    try:
        sb = Sandbox(SandboxLimits(timeout_s=3.0))
        sb.start()
    except SandboxUnavailableError as exc:
        pytest.skip(f"no sandbox here: {exc}")
    yield sb
    sb.close()
