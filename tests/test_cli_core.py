"""`codegemma generate | complete | chat` as a user runs them (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import codegemma
from tests.infer.conftest import model_dir  # noqa: F401  (session fixture: tiny random model dir)


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True,
                          text=True, input=stdin, timeout=300, encoding="utf-8")


@pytest.fixture(scope="module")
def cg(model_dir):  # noqa: F811
    with codegemma.load(model_dir, device="cpu") as loaded:
        yield loaded


def test_generate_prints_only_the_continuation(model_dir, cg):  # noqa: F811
    r = _cli("generate", "--model", model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", 16)
    assert r.returncode == 0, r.stderr
    assert r.stdout == cg.generate("def add(a, b):", max_new_tokens=16)  # greedy by default



def test_complete_at_file_line_col(model_dir, cg, tmp_path, monkeypatch):  # noqa: F811
    src = tmp_path / "pkg" / "calc.py"
    src.parent.mkdir()
    src.write_text("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n")
    other = tmp_path / "util.py"
    other.write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    r = subprocess.run([sys.executable, "-m", "codegemma", "complete", "--model", str(model_dir), "pkg/calc.py:2:5",
                        "--context", "util.py", "--max-new-tokens", "12"],
                       capture_output=True, text=True, timeout=300, encoding="utf-8")
    assert r.returncode == 0, r.stderr
    want = cg.complete("def add(a, b):\n    ", "return a + b\n\nprint(add(1, 2))\n", path="pkg/calc.py",
                       context=[("util.py", "X = 1\n")], max_new_tokens=12)
    assert r.stdout == want


def test_chat_message_and_repl(model_dir, cg):  # noqa: F811
    r = _cli("chat", "--model", model_dir, "--message", "hi", "--max-new-tokens", 6, "--temperature", 0.8,
             "--seed", 4)
    assert r.returncode == 0, r.stderr
    assert r.stdout == cg.chat([{"role": "user", "content": "hi"}], max_new_tokens=6, temperature=0.8, seed=4)
    r = _cli("chat", "--model", model_dir, "--max-new-tokens", 4, stdin="hello\nagain\n")
    assert r.returncode == 0 and r.stdout.count("model> ") == 2


def test_user_errors_are_one_line(model_dir, tmp_path):  # noqa: F811
    r = _cli("generate", "--model", tmp_path / "nope", "--prompt", "x")  # no --model: the built-in model
    assert r.returncode == 2 and "model directory not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    r = _cli("complete", "--model", model_dir, f"{f}:7:1")
    assert r.returncode == 2 and "line 7 is outside the file" in r.stderr
    r = _cli("chat", "--message", "hi")  # chat has no default: the built-in model is not instruction-tuned
    assert r.returncode == 2 and "--model" in r.stderr


def test_cursor_parsing():
    from codegemma.commands import parse_location, split_at_cursor

    assert parse_location("C:/x/a.py:3:7") == ("C:/x/a.py", 3, 7)
    for bad in ("a.py:x", ":1:1", " :1:1"):  # no file name: was "No such file or directory", naming nothing
        with pytest.raises(ValueError, match="FILE:LINE:COL"):
            parse_location(bad)
    text = "ab\ncd\n"
    assert split_at_cursor(text, 2, 2, "t") == ("ab\nc", "d\n")
    assert split_at_cursor(text, 3, 1, "t") == (text, "")
    with pytest.raises(ValueError, match="column 4"):
        split_at_cursor(text, 1, 4, "t")
