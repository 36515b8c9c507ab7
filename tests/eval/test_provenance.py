"""Run records: the model's hash and when a rerun may resume."""

import pytest


def test_samples_without_a_run_record_are_not_resumed(tmp_path):
    from codegemma.eval.provenance import check_resume
    path = tmp_path / "samples.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n"}\n')
    with pytest.raises(ValueError, match="no run record"):
        check_resume(path, {"model": "x", "model_sha256": "0" * 64})


def test_model_hashes_change_with_the_bytes_and_are_cached(tmp_path, monkeypatch):
    import os

    from codegemma.eval import provenance
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"a" * 100)
    (model / "README.md").write_text("not part of the identity")
    first = provenance.model_sha256(model)
    assert (tmp_path / "cache" / "codegemma" / "model-hashes.json").is_file()
    (model / "README.md").write_text("changed")
    assert provenance.model_sha256(model) == first
    st = (model / "model.safetensors").stat()
    (model / "model.safetensors").write_bytes(b"b" * 100)  # same size, other bytes
    os.utime(model / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert provenance.model_sha256(model) != first
    with pytest.raises(FileNotFoundError, match="no weight files"):
        provenance.model_sha256(tmp_path / "cache")
