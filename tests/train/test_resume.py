"""A run SIGKILLed mid-way and resumed logs exactly the losses of a run never stopped (CPU, bit-exact)."""

from __future__ import annotations

import signal

from tests.train.conftest import read_records, run_cli

FIELDS = ("step", "loss", "lr", "grad_norm", "tokens", "epoch")


def _args(data, out):
    # micro-batch 2 x accumulation 2 per step, a checkpoint every 4 steps, validation every 3
    return ["--data", str(data), "--out", str(out), "--preset", "debug", "--steps", "10", "--lr", "3e-3",
            "--micro-batch", "2", "--batch-tokens", "128", "--ckpt-every", "4", "--val-every", "3",
            "--warmup-steps", "2", "--no-progress", "--no-export"]


def _losses(run):
    return ([tuple(r[k] for k in FIELDS) for r in read_records(run, "train")],
            [(r["step"], r["loss"]) for r in read_records(run, "val")])


def test_kill_and_resume_reproduces_uninterrupted_losses(tmp_path, shards):
    straight = run_cli(_args(shards, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = run_cli(_args(shards, tmp_path / "resumed"), kill_after_step=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpts = tmp_path / "resumed" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000004"
    assert [r["step"] for r in read_records(tmp_path / "resumed", "train")][-1] == 6

    # without --resume the run refuses to overwrite; with it, it continues from step 4
    again = run_cli(_args(shards, tmp_path / "resumed"))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_cli(_args(shards, tmp_path / "resumed") + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected, got = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert [s[0] for s in got[0]] == list(range(1, 11))  # each step logged once
    assert got == expected  # bit-exact: same floats, same order
    assert len(expected[1]) == 4  # validation at 3, 6, 9, 10
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_00000008", "step_00000010"]
    assert not list(ckpts.glob(".tmp-*"))
