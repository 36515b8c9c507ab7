"""FSDP2 on the CPU: two torchrun processes (gloo) train like one process, and resume exactly."""

from __future__ import annotations

import pytest

from tests.train.conftest import read_records, run_cli

FIELDS = ("step", "loss", "grad_norm", "lr")


def _args(data, out, micro_batch):
    # The same global batch either way: 2 rows of 32 tokens per step.
    return ["--data", str(data), "--out", str(out), "--preset", "debug", "--steps", "6", "--lr", "3e-3",
            "--warmup-steps", "1", "--micro-batch", str(micro_batch), "--batch-tokens", "64",
            "--ckpt-every", "3", "--val-every", "3", "--no-progress"]


def test_two_processes_match_one_and_resume_exactly(tmp_path, shards):
    one = run_cli(_args(shards, tmp_path / "one", 2))
    assert one.returncode == 0, one.stderr[-3000:]

    # Two processes, SIGKILLed after step 5 (the newest checkpoint is step 3's, written by DCP).
    run = tmp_path / "two"
    killed = run_cli(_args(shards, run, 1), torchrun=2, kill_after_step=5)
    assert killed.returncode != 0
    before = [tuple(r[k] for k in FIELDS) for r in read_records(run, "train")]
    assert [r[0] for r in before] == [1, 2, 3, 4, 5]
    assert any(p.suffix == ".distcp" for p in (run / "checkpoints" / "step_00000003").iterdir())

    resumed = run_cli(_args(shards, run, 1) + ["--resume"], torchrun=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = [tuple(r[k] for k in FIELDS) for r in read_records(run, "train")]
    assert [r[0] for r in after] == list(range(1, 7))
    assert after[:5] == before  # steps 4 and 5, computed again after the resume, are bit-identical

    # Sharded training is the same optimisation as one process (up to reduction order).
    for a, b in zip(read_records(tmp_path / "one", "train"), read_records(run, "train")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    info = read_records(run, "run")[0]
    assert info["world"] == 2 and info["accum"] == 1
    # The export gathers the shards into one ordinary model directory.
    assert (run / "final" / "model.safetensors").is_file()
