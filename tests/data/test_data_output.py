"""The output folder of `codegemma data prepare`: what it may write into, what a failure leaves,
a full disk (a real one: a 2 MB tmpfs), and what a resumed run says. Real commands, real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.data.conftest import one_line_error, prepare_cli, write_tree

BODY = "".join(f"def step_{i}(values, scale={i}):\n    return [v * scale + {i} for v in values]\n\n"
               for i in range(12))


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("repos"), {
        f"{repo}/pkg/m{i}.py": BODY.replace("step_", f"{repo}_{i}_") for repo in ("alpha", "beta", "gamma")
        for i in range(4)})


def _digest(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".work" not in p.parts}


def _leftovers(out: Path) -> list[str]:
    """Temporary files of atomic writes and shards without a manifest: what must never remain."""
    tmp = [p for p in out.rglob("*") if ".tmp" in p.name]
    shards = [] if (out / "manifest.json").exists() else [*out.glob("*.tokens.bin"), *out.glob("*.index.npy")]
    return sorted(str(p.relative_to(out)) for p in tmp + shards)


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, repos, corpus_tokenizer):
    out = tmp_path / "data.bin"
    out.write_text("mine\n")
    line = one_line_error(prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=repos))
    assert str(out) in line and "is a file" in line
    assert out.read_text() == "mine\n"


def test_a_non_empty_unrelated_folder_is_refused_unless_overwrite(tmp_path, repos, corpus_tokenizer):
    out = tmp_path / "home"
    write_tree(out, {"notes.txt": "keep me\n", "src/app.py": "x = 1\n"})
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    line = one_line_error(prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=repos))
    assert str(out) in line and "not empty" in line and "--overwrite" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before       # nothing written
    ok = prepare_cli("--overwrite", out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (out / "manifest.json").is_file() and (out / "notes.txt").read_text() == "keep me\n"
    assert not (out / ".work").exists()


def test_a_finished_data_set_is_kept_or_replaced_only_with_overwrite(tmp_path, repos, corpus_tokenizer):
    out = tmp_path / "data"
    first = prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert first.returncode == 0, first.stderr[-3000:]
    made = _digest(out)
    again = prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert again.returncode == 0 and "already holds this data set" in again.stderr
    assert _digest(out) == made
    line = one_line_error(prepare_cli("--seed", "5", out=out, tokenizer=corpus_tokenizer, inp=repos))
    assert str(out) in line and "other settings" in line and "--overwrite" in line
    assert _digest(out) == made
    replaced = prepare_cli("--seed", "5", "--overwrite", out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 5


def test_a_failed_run_leaves_nothing_behind(tmp_path, corpus_tokenizer):
    tiny = write_tree(tmp_path / "tiny", {"a/x.py": "x = 1\n", "b/y.py": "y = 2\n"})   # all too_small
    out = tmp_path / "out"
    line = one_line_error(prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=tiny))
    assert "every file was filtered out" in line
    assert not out.exists()                     # created by the run, removed with its work
    out.mkdir()
    one_line_error(prepare_cli(out=out, tokenizer=corpus_tokenizer, inp=tiny))
    assert out.is_dir() and not any(out.iterdir())   # a folder the user made stays, empty


def test_an_interrupted_run_keeps_its_work_and_says_how_to_resume(tmp_path, repos, corpus_tokenizer):
    out = tmp_path / "out"
    # a Ctrl-C right after the 4th task (of 3 clean + 3 tokenize) marked itself done
    hit = prepare_cli("--task-mb", "0.001", out=out, tokenizer=corpus_tokenizer, inp=repos,
                      prefix=("-m", "tests.kill_at", "codegemma.data.tasks:mark_done", "4", "INT", "--"))
    assert hit.returncode == 130 and "Traceback" not in hit.stderr, hit.stderr[-3000:]
    [line] = hit.stderr.strip().splitlines()
    assert "interrupted" in line and "run the same command to resume" in line
    assert _leftovers(out) == [] and len(list(out.glob(".work/*/tasks-*/*/*.done"))) == 4
    again = prepare_cli("--task-mb", "0.001", out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert again.returncode == 0 and "resuming: 4 of 6 tasks already done" in again.stderr, again.stderr[-3000:]
    assert not (out / ".work").exists()


def _blocks(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    """mount(options) -> a tmpfs of those options (e.g. "size=2m") mounted for the test (root only);
    calling it again remounts the same tmpfs with new options."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(options: str) -> Path:
        cmd = ["mount", "-o", f"remount,{options}", str(disk)] if mounted else \
              ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(options)
        return disk

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture(scope="module")
def footprint(tmp_path_factory, repos, corpus_tokenizer) -> tuple[Path, int, int]:
    """A run on a normal disk, its work files kept: (output, bytes of work files, bytes in all)."""
    ref = tmp_path_factory.mktemp("ref") / "out"
    r = prepare_cli("--keep-work", "--task-mb", "0.001", out=ref, tokenizer=corpus_tokenizer, inp=repos)
    assert r.returncode == 0, r.stderr[-3000:]
    return ref, _blocks(ref / ".work"), _blocks(ref)


@pytest.mark.parametrize("stage,workers", [("early", 2), ("late", 1), ("inodes", 1)])
def test_a_full_disk_is_one_line_leaves_nothing_half_written_and_resumes(stage, workers, small_disk, footprint,
                                                                           repos, corpus_tokenizer):
    ref, work, total = footprint
    if stage == "inodes":
        # room for half of the files and directories: creating a directory or a temporary fails
        inodes = sum(1 for _ in ref.rglob("*"))
        disk = small_disk(f"size=2m,nr_inodes={inodes // 2}")
    else:
        # free space for about a third of the work files, or for all of them but not the data set
        disk = small_disk("size=2m")
        free = work // 3 if stage == "early" else work + (total - work) // 3
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - free))
    out = disk / "out"
    args = ("--task-mb", "0.001", "--workers", str(workers))
    line = one_line_error(prepare_cli(*args, out=out, tokenizer=corpus_tokenizer, inp=repos))
    assert "no space left" in line
    assert _leftovers(out) == [] and not (out / "manifest.json").exists()
    if stage == "inodes":
        small_disk("size=2m,nr_inodes=10000")
    else:
        (disk / "filler").unlink()
    resumed = prepare_cli(*args, out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and _leftovers(out) == []
    assert _digest(out) == _digest(ref)
