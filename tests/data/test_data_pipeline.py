"""End to end: `data prepare` on fixture repositories, then what the shards contain.

One uninterrupted inline run is the reference; a 2-process run, a killed-and-resumed run (a real
SIGKILL of a real subprocess) and a Ray run must produce byte-identical output files.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codegemma.data.executors import ExecutorConfig
from codegemma.data.prepare import PrepareConfig, prepare, split_repositories
from codegemma.data.shards import ShardReader
from codegemma.tokenizer import Tokenizer
from tests.data.conftest import decode_packs

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(corpus, tok, bench, out) -> PrepareConfig:
    return PrepareConfig(out=str(out), tokenizer=str(tok), input=str(corpus[0]), seq_len=256,
                         seed=3, data_dir=str(bench), sequences_per_shard=16, task_mb=0.001)


def _digest(out: Path) -> dict[str, str]:
    """sha256 of every output file (the work directory excluded)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".work" not in p.parts}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path_factory.mktemp("ref")
    manifest = prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out), ExecutorConfig(workers=1))
    return out, manifest


def _all_text(out: Path, tok: Tokenizer) -> str:
    parts = []
    for split in ("train", "val"):
        r = ShardReader(out, split)
        for i in range(len(r)):
            t, seg = r[i]
            parts.append(tok.decode(t[seg >= 0].tolist()))
    return "".join(parts)


def _packed_files(out: Path, tok: Tokenizer) -> dict[str, str]:
    """Un-FIM every file of every repository pack: path -> reconstructed texts (paths repeat across repos)."""
    files = {}
    for split in ("train", "val"):
        for pack in decode_packs(out, tok, split):
            previous = None
            for path, body, _ in pack:
                if path == previous:      # the next piece of a long file
                    files[path][-1] += body
                else:
                    files.setdefault(path, []).append(body)
                previous = path
    return files


def test_filters_dedup_and_decontamination_are_counted(reference):
    _, m = reference
    d = m["dropped"]
    assert d["contaminated"] == 1            # the planted HumanEval prompt + canonical solution
    assert d["exact_duplicate"] == 1 and d["near_duplicate"] == 1
    assert d["generated"] == 1 and d["minified"] == 1 and d["binary"] == 1
    assert m["stats"]["count/contaminated/humaneval"] == 1


def test_output_files_are_the_cleaned_originals(reference, corpus, corpus_tokenizer, planted):
    out, _ = reference
    tok = Tokenizer.load(corpus_tokenizer)
    files = _packed_files(out, tok)
    _, repos = corpus
    # survivors: vendored/VCS dirs skipped, dropped files absent, the first copy of a duplicate kept
    assert "pkg/util.py" in files and "lib/util_copy.py" not in files and "lib/util_near.py" not in files
    assert "solutions/he.py" not in files and "pkg/gen_pb2.py" not in files and "config.py" not in files
    assert not any(p.startswith("node_modules") for p in files)
    # every FIM document decodes back to its file (byte for byte, after cleaning)
    for repo, texts in repos.items():
        for path, text in texts.items():
            if path in files and path != "pkg/contact.py":
                assert text in files[path], (repo, path)
    n_written = sum(map(len, repos.values()))
    assert sum(map(len, files.values())) == n_written - 6 == reference[1]["stats"]["count/files_packed"]
    [contact] = files["pkg/contact.py"]
    assert planted["email"] not in contact and planted["key"] not in contact and planted["secret"] not in contact
    assert contact.count("<EMAIL>") == 1 and contact.count("<KEY>") == 2 and "<IP_ADDRESS>" in contact
    assert '"1.2.3.4"' in contact and "127.0.0.1" in contact
    # special-token texts in a file are its text (decode_packs checked they are no control tokens)
    [sentinel] = files["pkg/sentinel.py"]
    assert sentinel == repos["alpha"]["pkg/sentinel.py"]


def test_sequences_segments_and_validation_split(reference, corpus_tokenizer):
    out, m = reference
    tok = Tokenizer.load(corpus_tokenizer)
    train, val = ShardReader(out, "train"), ShardReader(out, "val")
    assert len(train) > 1 and len(val) >= 1
    assert m["splits"]["val"]["num_repositories"] >= 1
    # every stored token is a document token, a repeated FIM head, or a <bos> opening a continuation
    info = m["splits"]["train"]
    stored = sum(int((train[i][1] >= 0).sum()) for i in range(len(train)))
    assert 0 <= stored - info["num_tokens"] - info["num_repeated_tokens"] < len(train)
    tokens, seg = train[0]
    assert tokens.shape == (256,) and seg.shape == (256,)
    assert tokens[0] == tok.bos_id and seg[0] == 0
    # segment ids count up from 0; padding only at the end of the split
    for r in (train, val):
        for i in range(len(r)):
            t, s = r[i]
            real = s[s >= 0]
            assert np.all(np.diff(real) >= 0) and real[0] == 0
            if i < len(r) - 1:
                assert np.all(s >= 0)
            assert np.all(t[s < 0] == tok.pad_id)


def test_validation_split_rule():
    train, val = split_repositories(["a", "b"], 0.0)
    assert len(val) == 1 and len(train) == 1
    train, val = split_repositories(["a", "b", "c"], 0.999)
    assert len(train) == 1 and len(val) == 2
    assert split_repositories(["only"], 0.5) in ((["only"], []), ([], ["only"]))


def test_val_repos_name_the_validation_repositories():
    repos = ["numpy", "python-stdlib", "sympy"]
    assert split_repositories(repos, 0.999, ("sympy",)) == (["numpy", "python-stdlib"], ["sympy"])
    with pytest.raises(ValueError, match="no repository named lightning"):
        split_repositories(repos, 0.01, ("lightning",))
    with pytest.raises(ValueError, match="leave at least one"):
        split_repositories(repos, 0.01, tuple(repos))


def test_val_repos_end_to_end_keeps_the_rest_in_train(tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path / "named"
    cfg = _config(corpus, corpus_tokenizer, small_benchmarks, out)
    repos = sorted(corpus[1])
    cfg.val_repos = (repos[-1],)
    manifest = prepare(cfg, ExecutorConfig(workers=1))
    assert manifest["splits"]["val"]["num_repositories"] == 1
    assert manifest["splits"]["train"]["num_repositories"] == len(repos) - 1
    assert manifest["validation"]["val_repos"] == [repos[-1]]


def test_two_workers_give_identical_shards(reference, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    out = tmp_path / "w2"
    prepare(_config(corpus, corpus_tokenizer, small_benchmarks, out), ExecutorConfig(workers=2))
    assert _digest(out) == _digest(reference[0])


def _cli(corpus, tok, bench, out, workers=1, kill_after_markers=None):
    """`codegemma data prepare` in a subprocess; with `kill_after_markers`=K it is SIGKILLed right
    after its K-th task marked itself done (tests/kill_at.py: a real SIGKILL at an exact point)."""
    prefix = ["-m", "codegemma"]
    if kill_after_markers:
        prefix = ["-m", "tests.kill_at", "codegemma.data.tasks:mark_done", str(kill_after_markers), "--"]
    cmd = [sys.executable, *prefix, "data", "prepare", "--input", str(corpus[0]), "--out", str(out),
           "--tokenizer", str(tok), "--seq-len", "256", "--seed", "3", "--data-dir", str(bench),
           "--sequences-per-shard", "16", "--task-mb", "0.001", "--workers", str(workers)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_to_identical_shards(reference, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    # One repository per task (5 tasks per stage): the driver is SIGKILLed right after the 7th
    # completed task, in the middle of the tokenize stage; the rerun finishes with 2 worker processes.
    out = tmp_path / "killed"
    first = _cli(corpus, corpus_tokenizer, small_benchmarks, out, kill_after_markers=7)
    assert first.returncode == -9, first.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    [tasks] = list(out.glob(".work/*/tasks-*"))
    assert len(list((tasks / "clean").glob("*.done"))) == 5           # finished work was marked ...
    assert len(list((tasks / "tokens").glob("*.done"))) == 2
    second = _cli(corpus, corpus_tokenizer, small_benchmarks, out, workers=2)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming: 7 of 10 tasks already done" in second.stderr    # ... said so ...
    assert _digest(out) == _digest(reference[0])          # ... and the result is the same
    assert not (out / ".work").exists()                   # intermediate files are removed on success


def test_ray_executor_gives_identical_shards(reference, tmp_path, corpus, corpus_tokenizer, small_benchmarks):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    cfg = _config(corpus, corpus_tokenizer, small_benchmarks, out)
    cfg.task_mb = 0.02      # fewer, larger tasks than the reference: the grouping must not matter either
    prepare(cfg, ExecutorConfig(kind="ray", workers=2))
    assert _digest(out) == _digest(reference[0])


def test_cli_stats_and_inspect(reference, tmp_path):
    out, _ = reference
    png = tmp_path / "stats.png"
    stats = subprocess.run([sys.executable, "-m", "codegemma", "data", "stats", str(out), "--plot", str(png)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0, stats.stderr
    assert "near_duplicate" in stats.stdout and "FIM rate" in stats.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    insp = subprocess.run([sys.executable, "-m", "codegemma", "data", "inspect", str(out), "--n", "2"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert insp.returncode == 0, insp.stderr
    assert "<bos>" in insp.stdout and "sequence 1" in insp.stdout


def test_user_errors_are_one_line(tmp_path, corpus_tokenizer):
    r = subprocess.run([sys.executable, "-m", "codegemma", "data", "prepare", "--input", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "o"), "--tokenizer", str(corpus_tokenizer), "--no-decontaminate"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr
