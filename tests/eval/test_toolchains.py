"""Support folders: prepared once, reused, keyed by the toolchain, never half-written."""

import subprocess
import sys

import pytest

from codegemma.eval import languages, toolchains


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "codegemma" / "toolchains"


def test_prepared_once_and_reused(cache, monkeypatch):
    if languages.missing("js"):
        pytest.skip(languages.missing("js"))
    told = []
    first = toolchains.support_dir("js", progress=told.append)
    assert first.parent == cache and (first / "js-md5.js").is_file() and len(told) == 1
    stamp = first.stat().st_mtime_ns
    assert toolchains.support_dir("js", progress=told.append) == first
    assert first.stat().st_mtime_ns == stamp and len(told) == 1
    monkeypatch.setattr(toolchains, "RECIPE_VERSION", "changed")
    assert toolchains.support_dir("js") != first  # a new recipe or toolchain: a new folder
    assert toolchains.support_dir("python") is None and toolchains.support_dir("java") is None


def test_a_failed_preparation_leaves_nothing(cache, monkeypatch):
    def broken(out, work):
        (out / "half-written").write_text("x")
        raise ValueError("could not prepare the thing")
    monkeypatch.setitem(toolchains.RECIPES, "js", broken)
    with pytest.raises(ValueError, match="could not prepare"):
        toolchains.support_dir("js")
    assert [p.name for p in cache.iterdir()] == [".lock"]


def test_concurrent_scorers_prepare_one_folder(cache, tmp_path):
    if languages.missing("csharp"):
        pytest.skip(languages.missing("csharp"))
    code = "from codegemma.eval import toolchains; print(toolchains.support_dir('csharp'))"
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ":".join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    paths = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert len(paths) == 1 and all(p.returncode == 0 for p in procs)
    assert sorted(p.name for p in cache.iterdir()) == sorted([".lock", paths.pop().split("/")[-1]])


def test_mounted_read_only_inside_used_in_place_without_a_sandbox(cache):
    if languages.missing("js"):
        pytest.skip(languages.missing("js"))
    binds, seen = toolchains.mounted("js", unsafe=False)
    assert seen == languages.SUPPORT_MOUNT and binds == {seen: str(toolchains.support_dir("js"))}
    assert toolchains.mounted("js", unsafe=True) == ({}, str(toolchains.support_dir("js")))
    assert toolchains.mounted("java", unsafe=False) == ({}, "")
