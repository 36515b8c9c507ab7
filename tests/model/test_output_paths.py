"""`codegemma init` and `export` never clobber or half-write: an output path that is a file, a
folder, under a file, or already there ends in one line before any work (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codegemma.atomic import check_output_dir, check_output_file


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "codegemma", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _one_line_error(r, *fragments):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_init_refuses_a_file_a_path_under_a_file_and_a_full_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    _one_line_error(_cli("init", "--out", "notes.txt", cwd=tmp_path), "--out notes.txt is a file")
    _one_line_error(_cli("init", "--out", "notes.txt", "--force", cwd=tmp_path), "is a file")
    _one_line_error(_cli("init", "--out", "notes.txt/model", cwd=tmp_path), "notes.txt is a file, not a directory")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.py").write_text("x = 1\n")
    _one_line_error(_cli("init", "--out", "full", cwd=tmp_path), "not empty", "--force")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert _listing(tmp_path) == ["full", "full/mine.py", "notes.txt"]  # nothing half-written


@pytest.fixture(scope="module")
def debug_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "debug"
    r = _cli("init", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_export_names_the_modelfile_after_the_gguf_and_keeps_earlier_exports(debug_model, tmp_path):
    pytest.importorskip("gguf")
    for name in ("a.f16.gguf", "b.f32.gguf"):
        r = _cli("export", "--model", debug_model, "--gguf", tmp_path / name, "--dtype", name.split(".")[1])
        assert r.returncode == 0, r.stderr
    assert _listing(tmp_path) == ["a.f16.Modelfile", "a.f16.gguf", "b.f32.Modelfile", "b.f32.gguf"]
    assert (tmp_path / "a.f16.Modelfile").read_text().startswith("FROM ./a.f16.gguf\n")
    assert (tmp_path / "b.f32.Modelfile").read_text().startswith("FROM ./b.f32.gguf\n")

    before = (tmp_path / "a.f16.gguf").read_bytes()
    r = _cli("export", "--model", debug_model, "--gguf", tmp_path / "a.f16.gguf", "--dtype", "f32")
    _one_line_error(r, "a.f16.gguf already exists", "--force")
    assert (tmp_path / "a.f16.gguf").read_bytes() == before
    r = _cli("export", "--model", debug_model, "--gguf", tmp_path / "a.f16.gguf", "--dtype", "f32", "--force")
    assert r.returncode == 0 and (tmp_path / "a.f16.gguf").read_bytes() != before
    assert _listing(tmp_path) == ["a.f16.Modelfile", "a.f16.gguf", "b.f32.Modelfile", "b.f32.gguf"]


def test_export_refuses_bad_output_paths_before_reading_the_model(debug_model, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "c.Modelfile").write_text("mine")
    cases = [("folder", "is a directory"), ("file", "already exists"), ("file/x.gguf", "file is a file"),
             ("c.gguf", "c.Modelfile already exists")]
    for gguf, fragment in cases:
        # a missing model would be the error if the output were not checked first
        _one_line_error(_cli("export", "--model", tmp_path / "missing", "--gguf", tmp_path / gguf), fragment)
    assert _listing(tmp_path) == ["c.Modelfile", "file", "folder"]
    assert (tmp_path / "file").read_text() == "keep me"


def test_output_checks(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert check_output_file(tmp_path / "new" / "a.gguf") == tmp_path / "new" / "a.gguf"
    assert check_output_file(tmp_path / "f", force=True) == tmp_path / "f"
    with pytest.raises(FileExistsError, match="--gguf .* already exists; pass --force"):
        check_output_file(tmp_path / "f", option="--gguf")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        check_output_file(tmp_path / "d", force=True)
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        check_output_file(tmp_path / "f" / "deeper" / "a.gguf")
    assert check_output_dir(tmp_path / "d") == tmp_path / "d"  # empty: fine
    assert check_output_dir(tmp_path / "full", force=True) == tmp_path / "full"
    with pytest.raises(FileExistsError, match="not empty"):
        check_output_dir(tmp_path / "full")
    with pytest.raises(NotADirectoryError):
        check_output_dir(tmp_path / "f", force=True)
