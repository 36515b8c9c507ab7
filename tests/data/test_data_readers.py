"""Readers (repository trees, JSON lines, the default corpus) and `codegemma tokenizer train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegemma.data.document import Stats
from codegemma.data.readers import bounded_lines, default_roots, limit_plan, plan_sources, read_file, read_repository
from codegemma.repo.languages import language_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_languages_by_file_name():
    expected = {"a.py": "python", "a.js": "javascript", "a.ts": "typescript", "a.tsx": "tsx", "A.java": "java",
                "a.kt": "kotlin", "a.c": "c", "a.h": "c", "a.cpp": "cpp", "a.hpp": "cpp", "A.cs": "c_sharp",
                "a.go": "go", "a.rs": "rust", "README.md": None, "a.pyc": None}
    assert {p: language_of(p) for p in expected} == expected


def test_directory_of_repositories_skips_vcs_and_vendored(corpus, tmp_path):
    root, repos = corpus
    plan = plan_sources(str(root), tmp_path)
    assert [e["repo"] for e in plan] == sorted(repos)
    alpha = next(e for e in plan if e["repo"] == "alpha")
    paths = [f[0] for f in alpha["files"]]
    assert paths == sorted(repos["alpha"])
    docs = list(read_repository(alpha))
    assert docs[0].data == repos["alpha"][docs[0].path].encode()


def test_jsonl_input_groups_by_repository(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"repo": "x/one", "path": "b.py", "content": "print(2)\n"},
            {"repo": "x/one", "path": "a.py", "content": "print(1)\n"},
            {"repo": "two", "path": "m.go", "content": "package m\n"},
            {"repo": "two", "path": "notes.txt", "content": "not code"}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plan = plan_sources(str(src), tmp_path / "work")
    assert [(e["repo"], [f[0] for f in e["files"]]) for e in plan] == [("two", ["m.go"]), ("x/one", ["a.py", "b.py"])]
    docs = list(read_repository(plan[1]))
    assert [(d.path, d.data) for d in docs] == [("a.py", b"print(1)\n"), ("b.py", b"print(2)\n")]


def test_files_are_read_after_a_size_check_and_only_if_regular(tmp_path):
    (tmp_path / "ok.py").write_bytes(b"x" * 100)
    assert read_file(tmp_path / "ok.py", 100) == (b"x" * 100, None)
    assert read_file(tmp_path / "ok.py", 99) == (None, "too_large")
    os.mkfifo(tmp_path / "pipe.py")          # opening it for reading must not wait for a writer
    assert read_file(tmp_path / "pipe.py", 100) == (None, "unreadable")
    (tmp_path / "link.py").symlink_to(tmp_path / "ok.py")       # swapped in after planning
    assert read_file(tmp_path / "link.py", 100) == (None, "unreadable")
    assert read_file(tmp_path / "gone.py", 100) == (None, "unreadable")


def test_jsonl_lines_are_read_in_bounded_pieces(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"short\n" + b"y" * 1000 + b"\n" + b"last")
    assert list(bounded_lines(src, 100)) == [(1, b"short\n"), (2, None), (3, b"last")]
    big = json.dumps({"repo": "r", "path": "big.py", "content": "z" * 2000})
    ok = json.dumps({"repo": "r", "path": "ok.py", "content": "print(1)\n"})
    src.write_text(big + "\n" + ok + "\n")
    stats = Stats()
    plan = plan_sources(str(src), tmp_path / "work", max_bytes=1000, stats=stats)
    assert [f[0] for f in plan[0]["files"]] == ["ok.py"] and stats.dropped() == {"too_large": 1}
    src.write_text(ok + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")      # too deep for json
    with pytest.raises(ValueError, match=r"in.jsonl:2: expected a JSON object"):
        plan_sources(str(src), tmp_path / "work2")


def test_default_corpus_is_stdlib_and_site_packages():
    roots = default_roots()
    assert roots[0][0] == "stdlib" and (roots[0][1] / "os.py").is_file()
    assert any(name == "site-packages/numpy" for name, _ in roots)
    plan = [{"repo": "a", "files": [["x.py", 600_000], ["y.py", 600_000]]}, {"repo": "b", "files": [["z.py", 1]]}]
    assert limit_plan(plan, 1.0) == [{"repo": "a", "files": [["x.py", 600_000], ["y.py", 600_000]]}]
    assert limit_plan(plan, 0.5) == [{"repo": "a", "files": [["x.py", 600_000]]}]


def test_tokenizer_train_cli_writes_a_loadable_tokenizer(corpus, tmp_path):
    from transformers import AutoTokenizer

    from codegemma.tokenizer import Tokenizer

    root, _ = corpus
    out = tmp_path / "tok"
    r = subprocess.run([sys.executable, "-m", "codegemma", "tokenizer", "train", "--input", str(root),
                        "--vocab-size", "600", "--out", str(out)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 600 and tok.has_fim
    code = "def util_step_0(values):\n    return values\n"
    assert tok.decode(tok.encode(code)) == code
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.encode(code, add_special_tokens=False) == tok.encode(code)
