"""`data prepare --fim-passes N`: the train split holds N renderings of every repository, each with
its own FIM decisions and repository order; one pass is the single-pass output, byte for byte."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from codegemma.data.executors import ExecutorConfig
from codegemma.data.prepare import PrepareConfig, prepare, repository_order
from codegemma.data.shards import ShardReader
from codegemma.tokenizer import Tokenizer
from tests.data.conftest import decode_packs

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(corpus, tok, bench, out, **kw) -> PrepareConfig:
    return PrepareConfig(out=str(out), tokenizer=str(tok), input=str(corpus[0]), seq_len=256,
                         seed=3, data_dir=str(bench), sequences_per_shard=16, task_mb=0.001, **kw)


def _digest(out: Path, pattern: str = "*") -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob(pattern)) if p.is_file() and ".work" not in p.parts}


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus, corpus_tokenizer, small_benchmarks):
    """A run without the option (the single-pass output)."""
    out = tmp_path_factory.mktemp("single")
    return out, prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out), ExecutorConfig(workers=1))


@pytest.fixture(scope="module")
def two(tmp_path_factory, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path_factory.mktemp("two")
    return out, prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, fim_passes=2),
                        ExecutorConfig(workers=1))


def _repo_of(pack, repos: dict[str, dict[str, str]]) -> str:
    """The fixture repository a decoded pack comes from: the smallest one holding all its paths."""
    paths = {path for path, _, _ in pack}
    return min((r for r, files in repos.items() if paths <= set(files)), key=lambda r: len(repos[r]))


def _decision(fim: dict | None):
    """What a chunk's FIM decision was: None (plain) or (mode, where the middle starts and ends)."""
    return None if fim is None else (fim["mode"], len(fim["prefix"]), len(fim["middle"]))


def test_one_pass_is_the_output_without_the_option(single, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path / "one"
    m = prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, fim_passes=1), ExecutorConfig(workers=1))
    assert _digest(out) == _digest(single[0])        # shards, index files and manifest
    assert m["config"]["fim_passes"] == 1 and m["splits"]["train"]["fim_passes"] == 1


def test_two_passes_same_files_new_fim_splits(single, two, corpus, corpus_tokenizer):
    (out1, m1), (out2, m2) = single, two
    tok = Tokenizer.load(corpus_tokenizer)
    t1, t2 = m1["splits"]["train"], m2["splits"]["train"]
    assert m2["config"]["fim_passes"] == 2 and t2["fim_passes"] == 2 and m2["splits"]["val"]["fim_passes"] == 1
    # pass 0 is the single-pass train split; pass 1 is about as long (other FIM splits, other token counts)
    assert t2["num_tokens_per_pass"][0] == t1["num_tokens"] and sum(t2["num_tokens_per_pass"]) == t2["num_tokens"]
    assert abs(t2["num_tokens_per_pass"][1] - t1["num_tokens"]) < 0.05 * t1["num_tokens"]
    assert t2["num_documents"] == 2 * t1["num_documents"] and t2["num_repositories"] == t1["num_repositories"]
    # rows: about twice as many (how many FIM heads start over differs between renderings)
    assert 1.75 * t1["num_sequences"] <= t2["num_sequences"] <= 2.25 * t1["num_sequences"]
    # the rows of pass 0 come first: all but the last (padded) single-pass row are stored unchanged
    r1, r2 = ShardReader(out1, "train"), ShardReader(out2, "train")
    for i in range(len(r1) - 1):
        assert (r1[i][0] == r2[i][0]).all() and (r1[i][1] == r2[i][1]).all()
    # validation holds one pass, unchanged
    assert _digest(out2, "val-*") == _digest(out1, "val-*")
    assert m2["splits"]["val"] == m1["splits"]["val"]

    packs = decode_packs(out2, tok, "train")
    n = t1["num_repositories"]
    assert len(packs) == 2 * n
    _, repos = corpus
    order = [[_repo_of(p, repos) for p in packs[k * n:(k + 1) * n]] for k in range(2)]
    train = sorted(order[0])
    assert order[0] == repository_order(train, 3, 0) and order[1] == repository_order(train, 3, 1)
    # each pass visits the repositories in its own seeded order (with these 4 the two happen to agree)
    names = [f"repo{i}" for i in range(20)]
    assert len({tuple(repository_order(names, 3, k)) for k in range(4)}) == 4
    by_repo = [{r: p for r, p in zip(order[k], packs[k * n:(k + 1) * n])} for k in range(2)]
    changed = 0
    for repo in train:
        a, b = by_repo[0][repo], by_repo[1][repo]
        # the same files and pieces, in the same (dependency) order, with the same text ...
        assert [(path, body) for path, body, _ in a] == [(path, body) for path, body, _ in b]
        # ... but rendered with decisions of their own (plain/FIM, PSM/SPM, split point)
        changed += sum(_decision(fa) != _decision(fb) for (_, _, fa), (_, _, fb) in zip(a, b))
    chunks = sum(len(by_repo[0][r]) for r in train)
    assert changed >= chunks // 2, (changed, chunks)


def test_counts_cover_every_pass_and_files_once(single, two):
    s1, s2 = single[1]["stats"], two[1]["stats"]
    val1 = single[1]["splits"]["val"]["num_tokens"]
    # files are counted once ...
    for key in ("count/files_packed", "count/files_cut_into_pieces"):
        assert s2[key] == s1[key], key
    lengths = lambda s: {k: v for k, v in s.items() if "file_chars_log2" in k}
    assert lengths(s2) == lengths(s1) and lengths(s1)
    # ... FIM decisions and tokens once per rendering (val is rendered once)
    decisions = lambda s: s["count/fim_psm"] + s["count/fim_spm"] + s["count/plain_files"]
    assert decisions(s1) == s1["count/chunks_packed"] and decisions(s2) == s2["count/chunks_packed"]
    assert s1["count/chunks_packed"] < s2["count/chunks_packed"] < 2 * s1["count/chunks_packed"]
    assert s2["count/tokens"] == two[1]["splits"]["train"]["num_tokens"] + val1


def test_changing_passes_redoes_only_the_tokenize_and_pack_stages(single, two, tmp_path, corpus, corpus_tokenizer,
                                                                  small_benchmarks):
    out = tmp_path / "kept"
    prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, keep_work=True), ExecutorConfig(workers=1))
    [tasks] = list(out.glob(".work/*/tasks-*"))
    markers = {p: p.stat().st_mtime_ns for p in tasks.rglob("*.done")}
    assert {p.parent.name for p in markers} == {"clean", "tokens"}
    # the folder holds a finished data set of one pass: replacing it takes --overwrite
    with pytest.raises(FileExistsError, match="other settings"):
        prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, keep_work=True, fim_passes=2))
    prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, keep_work=True, fim_passes=2, overwrite=True),
            ExecutorConfig(workers=1))
    assert list(out.glob(".work/*/tasks-*")) == [tasks]            # the same work directory ...
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())   # ... its finished tasks kept
    assert len(list((tasks / "tokens-pass1").glob("*.done"))) == len(list((tasks / "tokens").glob("*.done")))
    assert _digest(out) == _digest(two[0])                          # and the same output as a fresh run
    # back to one pass: the manifest of two passes is not taken for it
    m = prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, keep_work=True, overwrite=True),
                ExecutorConfig(workers=1))
    assert m["splits"]["train"]["fim_passes"] == 1
    assert _digest(out) == _digest(single[0])


def test_two_passes_on_two_workers_give_identical_shards(two, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path / "w2"
    prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out, fim_passes=2), ExecutorConfig(workers=2))
    assert _digest(out) == _digest(two[0])


def test_two_passes_on_ray_give_identical_shards(two, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    cfg = _config(corpus, corpus_tokenizer, small_benchmarks, out, fim_passes=2)
    cfg.task_mb = 0.02
    prepare(cfg, ExecutorConfig(kind="ray", workers=2))
    assert _digest(out) == _digest(two[0])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_pass_counts_are_rejected(bad, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    cfg = _config(corpus, corpus_tokenizer, small_benchmarks, tmp_path / "o", fim_passes=bad)
    with pytest.raises(ValueError, match="--fim-passes must be a whole number >= 1"):
        prepare(cfg)
    assert not (tmp_path / "o").exists()         # rejected before anything is written


def test_cli_passes_and_stats(tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    base = [sys.executable, "-m", "codegemma", "data", "prepare", "--input", str(corpus[0]),
            "--tokenizer", str(corpus_tokenizer), "--seq-len", "256", "--seed", "3",
            "--data-dir", str(small_benchmarks), "--sequences-per-shard", "16", "--task-mb", "0.001"]
    bad = subprocess.run(base + ["--out", str(tmp_path / "bad"), "--fim-passes", "0"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "codegemma data: error: --fim-passes must be a whole number >= 1 (1 = one FIM rendering of each file, "
        "the default), got 0"]
    out = tmp_path / "three"
    ok = subprocess.run(base + ["--out", str(out), "--fim-passes", "3"], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "x 3 FIM passes" in ok.stdout
    stats = subprocess.run([sys.executable, "-m", "codegemma", "data", "stats", str(out), "--plot",
                            str(tmp_path / "s.png")], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=120)
    assert stats.returncode == 0, stats.stderr
    lines = stats.stdout.splitlines()
    assert any(l.startswith("train:") and l.endswith("3 FIM passes") for l in lines)
    assert any(l.startswith("val  :") and l.endswith("1 FIM pass") for l in lines)
    assert "3 renderings of each train file" in stats.stdout
    m = ShardReader(out, "train").manifest
    assert m["config"]["fim_passes"] == 3 and len(m["splits"]["train"]["num_tokens_per_pass"]) == 3
