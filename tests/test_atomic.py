"""codegemma.atomic: whole or nothing, ordinary permissions, rollback on failure."""

import os
import stat

import pytest

from codegemma.atomic import atomic_dir, atomic_file, atomic_path, atomic_write_text


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_file_appears_whole_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    with atomic_file(target) as fh:
        fh.write("{}\n")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "{}\n"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(target) == _mode(plain)  # not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_the_suffix_for_libraries(tmp_path):
    np = pytest.importorskip("numpy")
    target = tmp_path / "a.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_a_directory_target_is_refused_for_a_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(tmp_path / "d", "x")


def test_directory_replaces_the_old_one_only_on_success(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("1")
    assert (out / "config.json").read_text() == "1"
    assert _mode(out) & 0o755 == 0o755
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "config.json").write_text("2")
            raise RuntimeError("boom")
    assert (out / "config.json").read_text() == "1"
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "config.json").write_text("3")
    assert (out / "config.json").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_file_in_the_way_of_a_directory_is_named(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        with atomic_dir(tmp_path / "out", replace=True):
            pass


def test_disk_full_error_survives_pickling():
    """Worker processes hand it back to the driver through pickle."""
    import pickle

    from codegemma.atomic import DiskFullError

    err = pickle.loads(pickle.dumps(DiskFullError("/data/out/train-00001.bin")))
    assert isinstance(err, DiskFullError) and err.path == "/data/out/train-00001.bin"
    assert "no space left" in str(err) and "/data/out/train-00001.bin" in str(err)
