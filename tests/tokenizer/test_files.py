"""One place locates a tokenizer: the same paths accepted, the same message everywhere."""

from __future__ import annotations

import pytest

from codegemma.tokenizer import Tokenizer
from codegemma.tokenizer.files import find_tokenizer, locate_tokenizer, tokenizer_files

MESSAGE = "no tokenizer.json or tokenizer.model here; give a tokenizer file or a directory holding one"


def test_a_directory_a_file_and_the_preference_order(tmp_path):
    assert find_tokenizer(tmp_path) is None
    (tmp_path / "tokenizer.model").write_bytes(b"sp")
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.model"
    (tmp_path / "tokenizer.json").write_text("{}")
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.json"  # the JSON first by default
    assert find_tokenizer(tmp_path, prefer=("tokenizer.model", "tokenizer.json")) == tmp_path / "tokenizer.model"
    assert find_tokenizer(tmp_path / "tokenizer.model") == tmp_path / "tokenizer.model"
    assert find_tokenizer(tmp_path / "absent.json") is None


def test_tokenizer_files_lists_side_files_too(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in tokenizer_files(tmp_path)] == [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def test_locate_says_what_a_tokenizer_is(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        locate_tokenizer(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path / 'nope'}: {MESSAGE} (a model directory, or one written by " \
                              "`codegemma tokenizer train`)"


@pytest.fixture
def run_main(capsys):
    from codegemma.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err.strip()
    return run


def test_every_caller_gives_the_same_message(tmp_path, run_main):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=MESSAGE):
        Tokenizer.load(empty)
    calls = {
        "data": ["data", "prepare", "--input", tmp_path, "--tokenizer", empty, "--out", tmp_path / "shards"],
        "train": ["train", "--sft", tmp_path / "chats.jsonl", "--tokenizer", empty, "--preset", "debug",
                  "--out", tmp_path / "run"],
    }
    for command, args in calls.items():
        code, err = run_main(*args)
        assert code == 2 and err == f"codegemma {command}: error: {empty}: {MESSAGE} (a model directory, or " \
                                    "one written by `codegemma tokenizer train`)", err


@pytest.mark.parametrize("text", [
    '{"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": {"a": "SECRET"}, "merges": []}}',
    '{"version": "SECRET"}',
], ids=["value", "version"])
def test_a_malformed_tokenizer_json_is_not_quoted(tmp_path, text):
    (tmp_path / "tokenizer.json").write_text(text)
    with pytest.raises(ValueError, match="not a valid tokenizer.json") as info:
        Tokenizer.load(tmp_path)
    assert "SECRET" not in str(info.value) and "at line 1 column" in str(info.value)
