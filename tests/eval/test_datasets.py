"""Data lookup: data dir, environment, cache, checksum, download failure messages."""

import gzip
import shutil

import pytest

from codegemma.eval import datasets
from codegemma.eval.registry import get_benchmark


def test_lookup_order_and_checksum(data_dir, tmp_path, monkeypatch):
    spec = datasets.FILES["humaneval"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(datasets.ENV_DATA_DIR, str(data_dir))
    assert datasets.fetch(spec) == data_dir / spec.relpath
    monkeypatch.delenv(datasets.ENV_DATA_DIR)
    cached = tmp_path / "cache" / "codegemma" / "benchmarks" / spec.relpath
    cached.parent.mkdir(parents=True)
    shutil.copy(data_dir / spec.relpath, cached)
    assert datasets.fetch(spec, download=False) == cached
    cached.write_bytes(gzip.compress(b'{"task_id": "x"}\n'))
    with pytest.raises(ValueError, match="sha256"):
        datasets.fetch(spec, download=False)


def test_offline_without_a_copy_says_where_to_put_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(datasets.ENV_DATA_DIR, raising=False)
    with pytest.raises(FileNotFoundError, match="put a copy at") as err:
        datasets.fetch(datasets.FILES["mbpp"], download=False)
    assert str(tmp_path) in str(err.value)


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(datasets.ENV_DATA_DIR, raising=False)
    spec = datasets.DataFile("x/y.jsonl", "0" * 64, "http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(FileNotFoundError, match="could not download"):
        datasets.fetch(spec)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_mbpp_missing_is_a_clear_message(tmp_path):
    bench = get_benchmark("mbpp")
    assert not bench.data_present(tmp_path)
    with pytest.raises(FileNotFoundError, match="mbpp/mbpp.jsonl"):
        bench.problems(tmp_path)


def test_download_once_into_the_cache(data_dir, tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    (served / "mbpp").mkdir(parents=True)
    shutil.copy(data_dir / "mbpp" / "mbpp.jsonl", served / "mbpp" / "mbpp.jsonl")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        real = datasets.FILES["mbpp"]
        spec = datasets.DataFile(real.relpath, real.sha256,
                                 f"http://127.0.0.1:{server.server_port}/mbpp/mbpp.jsonl")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv(datasets.ENV_DATA_DIR, raising=False)
        path = datasets.fetch(spec)
        assert path == tmp_path / "cache" / "codegemma" / "benchmarks" / "mbpp" / "mbpp.jsonl"
        assert datasets.sha256_of(path) == real.sha256
        (served / "mbpp" / "mbpp.jsonl").unlink()  # the second call must not download
        assert datasets.fetch(spec) == path
        bad = datasets.DataFile("other/x.jsonl", "0" * 64, spec.url.replace("mbpp.jsonl", "x"))
        (served / "mbpp" / "x").write_text("tampered\n")
        with pytest.raises(ValueError, match="sha256"):
            datasets.fetch(bad)
        assert not (tmp_path / "cache" / "codegemma" / "benchmarks" / "other" / "x.jsonl").exists()
    finally:
        server.shutdown()
        server.server_close()
