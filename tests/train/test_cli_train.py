"""`codegemma train` as a new user meets it: the README's path end to end, what a run says while it
runs, when it resumes and when it is stopped with Ctrl-C (real subprocesses, real files)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.conftest import REPO, make_shards, run_cli


def _readme_lines(*starts: str) -> list[list[str]]:
    """The README's command lines that begin with each of `starts`, as argument lists (comments cut)."""
    lines = (REPO / "README.md").read_text().splitlines()
    found = []
    for start in starts:
        line = next((ln for ln in lines if ln.startswith(start)), None)
        assert line is not None, f"README has no line starting {start!r}"
        found.append(shlex.split(line.split("  #")[0]))
    return found


def _write_repos(root: Path) -> None:
    for repo in ("alpha", "beta", "gamma", "delta"):
        for i in range(3):
            body = "import os\n\n\n" + "".join(
                f'def {repo}_{i}_{j}(x, y):\n    """Combine x and y ({j})."""\n    total = x + y * {j}\n'
                f"    if total > {j}:\n        return total - {j}\n    return total\n\n\n" for j in range(12))
            path = root / repo / f"mod{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)


def _run(words: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    assert words[0] == "codegemma"
    return subprocess.run([sys.executable, "-m", "codegemma", *words[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_readme_training_path_runs_as_written(tmp_path, benchmarks_dir):
    """tokenizer train -> data prepare (8192-token rows, the default) -> train --preset debug.

    Only sizes are shrunk for a test: the vocabulary, the worker count and the number of steps."""
    tok, prep, train = _readme_lines("codegemma tokenizer train --input repos/",
                                     "codegemma data prepare --input repos/ --out data/ --tokenizer tok/ --workers",
                                     "codegemma train --data data/ --out runs/debug --preset debug")
    shrink = {"--vocab-size": "512", "--workers": "2", "--steps": "1"}
    for words in (tok, prep, train):
        for i, w in enumerate(words[:-1]):
            if w in shrink:
                words[i + 1] = shrink[w]
    assert "--seq-len" not in prep  # the README relies on data prepare's default row length
    _write_repos(tmp_path / "repos")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2",
           "CODEGEMMA_DATA_DIR": str(benchmarks_dir)}
    for words in (tok, prep, train):
        r = _run(words, tmp_path, env)
        assert r.returncode == 0, f"{shlex.join(words)}\n{r.stderr[-3000:]}"
    assert "8192" in r.stderr  # says that the preset's context grew to the rows, once
    final = tmp_path / "runs" / "debug" / "final"
    assert (final / "config.json").is_file()
    r = _run(["codegemma", "generate", "--model", str(final), "--prompt", "def f(x):", "--max-new-tokens", "4",
              "--device", "cpu"], tmp_path, env)
    assert r.returncode == 0, r.stderr[-2000:]


def test_init_model_shorter_than_the_rows_names_the_flag(tmp_path):
    model = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "codegemma", "init", "--out", str(model)], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    data = make_shards(tmp_path / "data", seq_len=4096, docs=4, val_docs=1)
    r = run_cli(["--data", str(data), "--out", str(tmp_path / "run"), "--init", str(model), "--steps", "1"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--seq-len 2048" in r.stderr and "data prepare" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_no_progress_prints_plain_lines_as_it_goes(tmp_path, shards):
    r = run_cli(["--data", str(shards), "--out", str(tmp_path / "run"), "--preset", "debug", "--steps", "3",
                 "--no-progress", "--no-export"])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: step ")]
    assert lines[0].startswith("train: step 1/3, loss ") and lines[-1].startswith("train: step 3/3, loss ")
    assert "\r" not in r.stderr  # no progress bar drawn into a pipe


def _args(shards: Path, out: Path, steps: int) -> list[str]:
    return ["--data", str(shards), "--out", str(out), "--preset", "debug", "--steps", str(steps),
            "--micro-batch", "2", "--ckpt-every", "2", "--val-every", "0", "--lr", "1e-2", "--no-export"]


def test_resume_says_how_much_was_done(tmp_path, shards):
    out = tmp_path / "run"
    first = run_cli(_args(shards, out, 4))
    assert first.returncode == 0, first.stderr
    again = run_cli(_args(shards, out, 6) + ["--resume"])
    assert again.returncode == 0, again.stderr
    # 4 steps x 2 rows x 32 tokens were done before
    assert f"resuming {out} from step_00000004: step 4 of 6 done (256 tokens" in again.stderr
    fresh = run_cli(_args(shards, tmp_path / "new", 1) + ["--resume"])
    assert fresh.returncode == 0 and "no checkpoint" in fresh.stderr and "starting at step 0" in fresh.stderr


def test_ctrl_c_stops_with_a_checkpoint_and_the_command_to_resume(tmp_path, shards):
    out = tmp_path / "run"
    args = _args(shards, out, 100000) + ["--ckpt-every", "100000", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", "train", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    seen = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("train: step 1/") or not line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=240)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    # the step in progress finished and was checkpointed, although --ckpt-every is far away
    resume = next(ln for ln in stderr.splitlines() if ln.startswith("  codegemma train "))
    words = shlex.split(resume)
    assert words[2:] == args + ["--resume"]
    held = next(ln for ln in stderr.splitlines() if "interrupted;" in ln)
    step = int(held.split("holds step ")[1].split()[0])
    assert step >= 1 and (out / "checkpoints" / f"step_{step:08d}" / "trainer.json").is_file()
    # the printed command continues the run (a time budget keeps the test short)
    r = run_cli(words[2:] + ["--max-minutes", "0.01"])
    assert r.returncode == 0, r.stderr
    assert f"from step_{step:08d}: step {step} of 100000 done" in r.stderr


@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_device_this_machine_lacks_is_one_line(tmp_path, shards, device):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli(["--data", str(shards), "--out", str(tmp_path / "run"), "--preset", "debug", "--device", device])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) <= 3 and "Traceback" not in r.stderr
