"""Atomic writes: a file or a directory appears whole or not at all, and a failure leaves nothing.

The one helper for every place that writes output a user keeps (checkpoints, shards, reports,
GGUF files, tokenizers, metrics). Each writes into a temporary sibling (same directory, so the
final rename stays on one filesystem and is atomic), flushes it to disk, gives it the permissions
an ordinary `open()` would (0666 & ~umask for files, 0777 & ~umask for directories; mkstemp's
0600 would make results private beside their 0644 siblings) and renames it into place. On any
error the temporary is removed and an existing target is left as it was (a directory being
replaced is moved aside first and put back if the swap fails).

A full disk is reported as `DiskFullError` (an OSError whose message names the path and the fix),
which the CLI prints as one line.

    with atomic_file(path) as fh:          # text; atomic_file(path, "wb") for bytes
        fh.write(...)
    atomic_write_text(path, text)
    with atomic_path(path) as tmp:          # for libraries that write to a path themselves
        np.save(tmp, array)                 # (tmp keeps path's suffix, so np.save adds none)
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "config.json").write_text(...)

Commands check their output paths with `check_output_file` / `check_output_dir` before any slow
work, so a path that cannot be written (a file where a directory is wanted, a folder where a file
is, a parent that is a file) or would be overwritten without --force is one line, not an hour later.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["DiskFullError", "atomic_file", "atomic_write_text", "atomic_write_bytes", "atomic_path",
           "atomic_dir", "default_file_mode", "check_output_file", "check_output_dir"]


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing `path`; nothing was left half-written."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing {path}; "
                                       "nothing was left half-written: free some space and run it again")
        self.path = str(path)

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # survives pickling (worker processes hand it back to the driver)
        return (DiskFullError, (self.path,))


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _named(path: Path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _check_parents(path: Path, option: str | None) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{_named(path, option)}: {parent} is a file, not a "
                                         "directory; choose another path")
            return


def check_output_file(path: str | os.PathLike, force: bool = False, option: str | None = None,
                      example: str = "NAME") -> Path:
    """Refuse a file output that is a directory, lies under a file, or exists (unless `force`).

    `option` names the flag in the message (e.g. "--gguf"); `force` is the --force that allows
    replacing an existing file.
    """
    path = Path(path)
    _check_parents(path, option)
    if path.is_dir():
        raise IsADirectoryError(f"{_named(path, option)} is a directory; give a file path "
                                f"inside it, e.g. {path / example}")
    if path.exists() and not force:
        raise FileExistsError(f"{_named(path, option)} already exists; pass --force to "
                              "replace it, or choose another path")
    return path


def check_output_dir(path: str | os.PathLike, force: bool = False, option: str | None = None) -> Path:
    """Refuse a directory output that is a file, lies under a file, or is a non-empty directory
    (unless `force`, which allows replacing it)."""
    path = Path(path)
    _check_parents(path, option)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{_named(path, option)} is a file, not a directory; "
                                 "choose another path")
    if path.is_dir() and not force and any(path.iterdir()):
        raise FileExistsError(f"{_named(path, option)} exists and is not empty; choose a new "
                              "directory, or pass --force to replace it")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a plain open(path, "w") gives a new file."""
    return 0o666 & ~_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path, tag: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{tag}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write; renamed onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory; give a file path", str(path))
    try:
        tmp = _tmp_name(path, "tmp")
    except OSError as exc:  # no room even for an empty file (or no inode left)
        if exc.errno in _FULL:
            raise DiskFullError(path) from None
        raise
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except FileNotFoundError:
            raise FileNotFoundError(f"{tmp}: the writer did not create the file") from None
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _FULL:
            raise DiskFullError(path) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """open(path, mode) into a temporary that replaces `path` when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_file(path, "w", encoding=encoding) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as fh:
        fh.write(data)


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """A temporary directory beside `path` to fill; it becomes `path` when the block succeeds.

    An existing `path` is an error (FileExistsError) unless `replace`: then it is moved aside, the
    new directory renamed in, and the old one removed only afterwards (put back if the rename fails).
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(errno.EEXIST, f"{path} already exists; choose a new path", str(path))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{path} is a file, not a directory; choose another path",
                                 str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFullError(path) from None
        raise
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the result private
        yield tmp
        _swap_in(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in _FULL:
            raise DiskFullError(path) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _swap_in(new: Path, out: Path) -> None:
    """Rename `new` to `out`; an existing `out` is moved aside first and removed only afterwards."""
    if not out.exists():
        os.replace(new, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, aside / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(aside / out.name, out)  # put the previous directory back
        raise
    shutil.rmtree(aside, ignore_errors=True)
