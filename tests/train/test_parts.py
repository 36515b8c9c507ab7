"""The loop's parts: config file rules, schedule, data order across processes, the fused loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codegemma.train.config import build_config
from codegemma.train.data import IGNORE, Row, RowStream, document_positions, make_batch
from codegemma.train.loss import linear_cross_entropy, reference_cross_entropy
from codegemma.train.metrics import flops_per_token, peak_tflops
from codegemma.train.setup import lr_at


def test_config_file_then_flags_and_unknown_keys(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('data = "d"\nout = "o"\npreset = "debug"\nseq-len = 64\nlr = 1\nlora_targets = ["q_proj"]\n')
    cfg = build_config(f, lr=2e-4, steps=None)
    assert cfg.seq_len == 64 and cfg.lr == 2e-4 and cfg.steps == 1000 and cfg.lora_targets == ("q_proj",)
    assert isinstance(build_config(f).lr, float)
    f.write_text('data = "d"\nout = "o"\npreset = "debug"\nlearning_rate = 1e-3\n')
    with pytest.raises(ValueError, match="unknown key 'learning_rate'.*valid keys are"):
        build_config(f)
    f.write_text('data = "d"\nout = "o"\npreset = "debug"\nsteps = "ten"\n')
    with pytest.raises(ValueError, match="steps must be int"):
        build_config(f)
    with pytest.raises(FileNotFoundError, match="--config"):
        build_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="activation_checkpointing"):
        build_config(out="o", data="d", preset="debug", activation_checkpointing="some")


def test_warmup_then_cosine_to_the_floor():
    cfg = build_config(out="o", data="d", preset="debug", steps=110, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # never rises after warmup
    assert lrs[-1] == pytest.approx(1e-4) and lrs[60] == pytest.approx(5.5e-4, rel=0.02)


def test_row_order_is_the_same_for_any_number_of_processes():
    rows = list(range(10))
    single = RowStream(rows, seed=3)
    alone = [r for _ in range(6) for r in single.next_rows(2)]
    ranks = [RowStream(rows, seed=3, rank=k, world=2) for k in range(2)]
    together = [r for _ in range(6) for s in ranks for r in s.next_rows(1)]
    assert alone == together
    assert sorted(alone[:10]) == rows  # one epoch is a permutation
    assert alone[10:] != alone[:10]  # the next epoch is shuffled again
    fresh = RowStream(rows, seed=3)
    fresh.load_state_dict(single.state_dict())
    assert fresh.next_rows(3) == single.next_rows(3)
    with pytest.raises(ValueError, match="same data and seed"):
        RowStream(rows[:5], seed=3).load_state_dict(single.state_dict())


def test_labels_positions_and_padding():
    tokens = np.array([2, 5, 6, 2, 7, 8, 9, 0, 0], dtype=np.int64)
    segments = np.array([0, 0, 0, 1, 1, 1, 1, -1, -1], dtype=np.int32)
    b = make_batch([Row(tokens, segments)], doc_mask=True)
    assert b["labels"][0].tolist() == [5, 6, IGNORE, 7, 8, 9, IGNORE, IGNORE, IGNORE]
    assert b["positions"][0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert make_batch([Row(tokens, segments)], doc_mask=False)["positions"][0].tolist() == list(range(9))
    assert document_positions(torch.tensor([[4, 4, 4]])).tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("chunk", [5, 64])
def test_fused_loss_matches_full_logits(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 11, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 40, (2, 11))
    labels[0, :3] = IGNORE
    ours = linear_cross_entropy(hidden, weight, labels, scale=0.5, chunk=chunk)
    (ours * 3).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = reference_cross_entropy(hidden @ weight.t(), labels) * 0.5
    (ref * 3).backward()
    assert torch.allclose(ours, ref, rtol=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-5) and torch.allclose(grads[1], weight.grad, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(hidden, weight, labels, 0.5, chunk), ref, rtol=1e-5)


def test_mfu_inputs():
    from codegemma.model.config import get_preset

    cfg = get_preset("2b")
    per_token = flops_per_token(cfg, 8192)
    assert per_token == pytest.approx(6 * cfg.num_parameters() + 6 * 18 * 8 * 256 * 8192)
    assert 1.5e10 < per_token < 1.8e10
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("Some CPU") is None


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path, shards):
    from codegemma.model.checkpoint import load_model
    from codegemma.train.loop import train
    from tests.train.conftest import read_records

    runs = {}
    for mode in ("none", "every-2", "full"):
        out = tmp_path / mode
        train(build_config(out=str(out), data=str(shards), preset="debug", steps=3, lr=3e-3, warmup_steps=1,
                           activation_checkpointing=mode, val_every=0, ckpt_every=0, progress=False))
        runs[mode] = [r["loss"] for r in read_records(out, "train")]
        load_model(out / "final", device="cpu")  # plain names in the export, no wrapper prefixes
    assert runs["none"] == runs["every-2"] == runs["full"]


def test_accumulation_equals_one_big_micro_batch(tmp_path, shards):
    from codegemma.train.loop import train
    from tests.train.conftest import read_records

    runs = {}
    for micro in (4, 1):  # 4 rows at once, or 4 micro-batches of 1 row: the same optimisation
        out = tmp_path / f"mb{micro}"
        train(build_config(out=str(out), data=str(shards), preset="debug", steps=3, lr=3e-3, warmup_steps=1,
                           micro_batch=micro, batch_tokens=128, val_every=0, ckpt_every=0, export=False,
                           progress=False))
        runs[micro] = read_records(out, "train")
    assert read_records(tmp_path / "mb1", "run")[0]["accum"] == 4
    for a, b in zip(runs[4], runs[1]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_a_preset_takes_the_vocabulary_of_the_data_tokenizer(tmp_path):
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer
    from codegemma.train.setup import preset_config
    from tests.conftest import SAMPLE_CODE

    save_tokenizer_files(train_bpe_tokenizer([SAMPLE_CODE], 700), tmp_path)
    config = preset_config("debug", tmp_path)
    assert config.vocab_size == 700 and config.hidden_size == preset_config("debug", None).hidden_size
    assert preset_config("debug", None).vocab_size == 512


def test_max_minutes_stops_the_run_and_still_exports(tmp_path):
    from tests.train.conftest import make_shards, read_records, run_cli

    data = make_shards(tmp_path / "data")
    out = tmp_path / "run"
    done = run_cli(["--data", str(data), "--out", str(out), "--preset", "debug", "--steps", "500",
                    "--max-minutes", "0.0001", "--no-progress"], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [r["step"] for r in read_records(out, "train")]
    assert steps == [1], done.stderr[-2000:]
    assert list((out / "checkpoints").iterdir()) and (out / "final" / "model.safetensors").is_file()
