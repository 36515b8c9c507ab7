"""Readers (repository trees, JSON lines, the default corpus) and `codegemma tokenizer train`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from codegemma.data.readers import default_roots, limit_plan, plan_sources, read_repository
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
    docs = read_repository(alpha)
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
    docs = read_repository(plan[1])
    assert [(d.path, d.data) for d in docs] == [("a.py", b"print(1)\n"), ("b.py", b"print(2)\n")]


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
