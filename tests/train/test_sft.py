"""Instruction tuning: only the model's turns (and their <end_of_turn>) are targets."""

from __future__ import annotations

import json

import pytest
import torch

from codegemma.train.data import IGNORE, ChatRows, make_batch
from tests.train.conftest import read_records, run_cli

CHATS = [
    [{"role": "user", "content": "Write add."}, {"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
    [{"role": "user", "content": "Greet me"}, {"role": "model", "content": "print('Hello')"},
     {"role": "user", "content": "Again, louder"}, {"role": "model", "content": "print('HELLO!')"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
]


@pytest.fixture
def sft_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS))
    return path


def test_targets_are_exactly_the_model_turns(sft_file, small_tokenizer_dir):
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    rows = ChatRows(sft_file, tok, seq_len=256)
    assert len(rows) == 1  # three short chats packed into one row, as three segments
    batch = make_batch([rows[0]], doc_mask=True)
    labels = batch["labels"][0]
    targets = labels[labels != IGNORE].tolist()
    replies = [m["content"] for chat in CHATS for m in chat if m["role"] in ("assistant", "model")]
    expected = sum((tok.encode(r + "<end_of_turn>") for r in replies), [])
    assert targets == expected
    assert tok.decode(targets).count("<end_of_turn>") == 4
    assert "Write add" not in tok.decode(targets) and "<start_of_turn>" not in tok.decode(targets)
    # each chat starts at position 0 (its own document)
    bos = (batch["tokens"][0] == tok.bos_id).nonzero().flatten().tolist()
    assert len(bos) == 3 and all(batch["positions"][0, i] == 0 for i in bos)


def test_long_chat_is_cut_and_bad_lines_are_named(tmp_path, small_tokenizer_dir):
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(small_tokenizer_dir)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "model", "content": "x = 1\n" * 200}]}) + "\n")
    rows = ChatRows(long, tok, seq_len=64)
    assert rows.truncated == 1 and len(rows) == 1 and rows[0].tokens.shape == (64,)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{"text": "no messages"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        ChatRows(bad, tok, seq_len=64)


def test_sft_cli_trains_on_model_turns(tmp_path, sft_file, small_tokenizer_dir):
    out = tmp_path / "run"
    proc = run_cli(["--sft", str(sft_file), "--tokenizer", str(small_tokenizer_dir), "--out", str(out),
                    "--preset", "debug", "--seq-len", "128", "--steps", "30", "--lr", "1e-2",
                    "--warmup-steps", "3", "--no-progress", "--sft-val", str(sft_file), "--val-every", "30"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [r["loss"] for r in read_records(out, "train")]
    assert losses[-1] < 0.5 * losses[0]
    from codegemma.model.checkpoint import load_model

    model, _ = load_model(out / "final", device="cpu", dtype=torch.float32)
    assert (out / "final" / "tokenizer.json").is_file()
    assert read_records(out, "val")[-1]["loss"] < losses[0]
