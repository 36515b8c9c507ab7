"""Hostile inputs to `codegemma data prepare`, through the real command on real files: names that
are not UTF-8, names and contents that spell control tokens, files too large to read."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

from codegemma.data.shards import ShardReader
from codegemma.tokenizer import Tokenizer
from tests.data.conftest import decode_packs, prepare_cli, write_tree

BODY = "".join(f"def step_{i}(values, scale={i}):\n    return [v * scale + {i} for v in values]\n\n"
               for i in range(12))
SPECIAL_TEXTS = "<eos> <bos> <pad> <|fim_prefix|> <|fim_suffix|> <|fim_middle|> <|file_separator|> <start_of_turn>"


def _body(tag: str) -> str:
    return BODY.replace("step_", f"{tag}_")


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _files(out: Path, tok) -> dict[str, str]:
    """path -> text of every file in the shards (pieces joined), via the id-level decoder."""
    files: dict[str, str] = {}
    for split in ("train", "val"):
        for pack in decode_packs(out, tok, split):
            for path, text, _ in pack:
                files[path] = files.get(path, "") + text
    return files


def test_names_that_are_not_utf8_are_dropped_with_a_reason(tmp_path, corpus_tokenizer):
    repos = write_tree(tmp_path / "repos", {
        "alpha/ok.py": _body("ok"),
        b"alpha/bad\xff.py": _body("bad"),                # a file name that is not UTF-8
        b"alpha/dir\xfe/inner.py": _body("inner"),        # ... a directory name
        "alpha/two\nlines.py": _body("newline"),          # a name that would break the path line
        b"gamma\xff/main.py": _body("gamma"),             # a repository name that is not UTF-8
        "beta/main.py": _body("beta"),
    })
    r = prepare_cli(out=tmp_path / "out", tokenizer=corpus_tokenizer, inp=repos)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    dropped = _manifest(tmp_path / "out")["dropped"]
    assert dropped["undecodable_path"] == 3 and dropped["bad_path"] == 1
    assert set(_files(tmp_path / "out", Tokenizer.load(corpus_tokenizer))) == {"ok.py", "main.py"}


def test_jsonl_paths_that_are_not_text_are_dropped_with_a_reason(tmp_path, corpus_tokenizer):
    rows = [json.dumps({"repo": "r", "path": "good.py", "content": _body("good")}).encode(),
            json.dumps({"repo": "r", "path": "\ud800lone.py", "content": _body("lone")}).encode(),
            json.dumps({"repo": "\udcffrepo", "path": "x.py", "content": _body("repo")}).encode(),
            b'{"repo": "r", "path": "raw\xff.py", "content": "' + _body("raw").replace("\n", "\\n").encode() + b'"}',
            json.dumps({"repo": "s", "path": "other.py", "content": _body("other")}).encode()]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(rows) + b"\n")
    r = prepare_cli(out=tmp_path / "out", tokenizer=corpus_tokenizer, inp=src)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert _manifest(tmp_path / "out")["dropped"]["undecodable_path"] == 3
    assert set(_files(tmp_path / "out", Tokenizer.load(corpus_tokenizer))) == {"good.py", "other.py"}


def test_names_and_contents_never_become_control_tokens(tmp_path, corpus_tokenizer):
    files = {f"alpha/plain_{i}.py": _body(f"p{i}") for i in range(6)}
    files.update({
        "alpha/<eos>.py": _body("eos"),
        "alpha/<|fim_middle|>x<|file_separator|>.py": _body("sep"),
        "alpha/<bos>/<|fim_prefix|>.py": _body("bos"),
        "alpha/tokenizer_table.py": _body("tok") + f'SPECIALS = "{SPECIAL_TEXTS}"\n',
        "beta/main.py": _body("beta") + "# <|fim_suffix|><eos>\n",
    })
    repos = write_tree(tmp_path / "repos", files)
    out = tmp_path / "out"
    r = prepare_cli("--fim-rate", "0.5", "--seed", "1", out=out, tokenizer=corpus_tokenizer, inp=repos)
    assert r.returncode == 0, r.stderr[-3000:]
    tok = Tokenizer.load(corpus_tokenizer)
    # decode_packs asserts that control ids sit only at structural positions: <bos>, the FIM
    # sentinels of each example, file separators and <eos>
    got = _files(out, tok)
    assert got == {path.split("/", 1)[1]: text for path, text in files.items()}
    fim = [c for s in ("train", "val") for pack in decode_packs(out, tok, s) for c in pack if c[2] is not None]
    plain = [c for s in ("train", "val") for pack in decode_packs(out, tok, s) for c in pack if c[2] is None]
    assert fim and plain                     # both renderings were exercised
    # the control ids in the shards are exactly the structure's: one <bos>/<eos> per pack (plus a
    # <bos> per continuation row), three sentinels per FIM example, a separator between files
    control = {tok.token_id(n) for n in ("eos", "fim_prefix", "fim_suffix", "fim_middle", "file_separator")}
    counts = dict.fromkeys(control, 0)
    for split in ("train", "val"):
        reader = ShardReader(out, split)
        for i in range(len(reader)):
            tokens, seg = reader[i]
            for t in tokens[seg >= 0].tolist():
                if t in counts:
                    counts[t] += 1
    n_packs = 2
    assert counts[tok.eos_id] == n_packs
    # (a FIM head that starts over in the next row repeats its sentinels: at least one per example)
    assert counts[tok.token_id("fim_middle")] >= len(fim) and counts[tok.token_id("fim_prefix")] >= len(fim)
    assert counts[tok.token_id("file_separator")] >= len(files) - n_packs


def _limit_memory(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_sizes_are_checked_before_reading(tmp_path, corpus_tokenizer):
    # A 3 GB sparse file in a repository and a 1.2 GB JSON line, run with 1 GB of address space:
    # reading either whole would fail; both are dropped as too_large.
    repos = write_tree(tmp_path / "repos", {"alpha/ok.py": _body("ok"), "beta/main.py": _body("beta")})
    with open(repos / "alpha" / "huge.py", "wb") as fh:
        fh.truncate(3 * 1024**3)
    r = prepare_cli(out=tmp_path / "out", tokenizer=corpus_tokenizer, inp=repos,
                    preexec_fn=_limit_memory(1024**3))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert _manifest(tmp_path / "out")["dropped"]["too_large"] == 1

    src = tmp_path / "in.jsonl"
    with open(src, "wb") as fh:
        fh.write(json.dumps({"repo": "r", "path": "a.py", "content": _body("a")}).encode() + b"\n")
        fh.write(b'{"repo": "r", "path": "big.py", "content": "')
        fh.seek(1200 * 1024**2, os.SEEK_CUR)          # a hole: one 1.2 GB line
        fh.write(b'"}\n' + json.dumps({"repo": "s", "path": "b.py", "content": _body("b")}).encode() + b"\n")
    r = prepare_cli(out=tmp_path / "out2", tokenizer=corpus_tokenizer, inp=src, preexec_fn=_limit_memory(1024**3))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert _manifest(tmp_path / "out2")["dropped"]["too_large"] == 1
    assert set(_files(tmp_path / "out2", Tokenizer.load(corpus_tokenizer))) == {"a.py", "b.py"}
