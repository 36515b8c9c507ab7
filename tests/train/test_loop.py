"""The loop end to end on the CPU: it learns, it exports a model both codegemma and transformers load."""

from __future__ import annotations

import json

import pytest
import torch

from codegemma.train.config import build_config
from codegemma.train.loop import train
from tests.train.conftest import make_shards, read_records


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_tokenizer_dir):
    root = tmp_path_factory.mktemp("overfit")
    data = make_shards(root / "data", seq_len=32, docs=8, val_docs=4, tokenizer=small_tokenizer_dir)
    cfg = build_config(out=str(root / "run"), data=str(data), preset="debug", steps=60, lr=1e-2,
                       warmup_steps=5, micro_batch=2, batch_tokens=128, val_every=30, ckpt_every=1000,
                       progress=False)
    summary = train(cfg)
    return root / "run", summary


def test_debug_model_overfits_tiny_data(trained):
    run, summary = trained
    losses = [r["loss"] for r in read_records(run, "train")]
    assert len(losses) == 60
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert last < 0.25 * first, (first, last)
    val = read_records(run, "val")
    assert [r["step"] for r in val] == [30, 60] and val[1]["loss"] < val[0]["loss"]
    assert summary["val_loss"] == val[1]["loss"]
    records = read_records(run, "train")
    assert {"lr", "grad_norm", "tokens_per_s", "tokens", "epoch"} <= set(records[0])
    assert records[-1]["tokens"] == 60 * 128
    assert (run / "loss.png").stat().st_size > 1000
    assert (run / "checkpoints" / "step_00000060" / "trainer.json").is_file()


def test_export_loads_in_transformers_with_equal_logits(trained):
    transformers = pytest.importorskip("transformers")
    from codegemma.model.checkpoint import load_model
    from codegemma.train.data import PackedRows, make_batch
    from codegemma.train.step import document_attention_mask

    run, summary = trained
    final = run / "final"
    assert summary["final"] == str(final)
    assert (final / "tokenizer.json").is_file()  # taken from the data manifest
    ours, config = load_model(final, device="cpu", dtype=torch.float32)
    theirs = transformers.GemmaForCausalLM.from_pretrained(final, torch_dtype=torch.float32).eval()
    rows = PackedRows(run.parent / "data")
    batch = make_batch([rows[i] for i in range(len(rows))], doc_mask=False)
    with torch.no_grad():
        a = ours(batch["tokens"])
        b = theirs(batch["tokens"]).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    # the exported weights are the trained ones: they predict most training targets
    batch = make_batch([rows[i] for i in range(len(rows))], doc_mask=True)  # as trained
    with torch.no_grad():
        masked = ours(batch["tokens"], batch["positions"], attn_mask=document_attention_mask(batch["segments"]))
    known = batch["labels"] != -100
    assert (masked.argmax(-1) == batch["labels"])[known].float().mean() > 0.8
    tok = transformers.AutoTokenizer.from_pretrained(final)
    assert tok.bos_token_id == 2


def test_document_mask_isolates_packed_documents(tmp_path):
    """With the mask and restarting positions, a document's logits do not depend on its neighbour."""
    from codegemma.model.config import get_preset
    from codegemma.model.transformer import Gemma
    from codegemma.train.data import Row, make_batch
    from codegemma.train.step import document_attention_mask, document_block_mask

    model = Gemma(get_preset("debug")).init_weights(0).eval()
    doc_b = [2, 40, 41, 42, 43]
    rows = []
    for doc_a in ([2, 10, 11], [2, 99, 98, 97, 96, 95]):
        tokens = doc_a + doc_b + [0] * (16 - len(doc_a) - len(doc_b))
        segments = [0] * len(doc_a) + [1] * len(doc_b) + [-1] * (16 - len(doc_a) - len(doc_b))
        rows.append(Row(torch.tensor(tokens).numpy(), torch.tensor(segments, dtype=torch.int32).numpy()))
    batch = make_batch(rows, doc_mask=True)
    with torch.no_grad():
        logits = model(batch["tokens"], batch["positions"], attn_mask=document_attention_mask(batch["segments"]))
        unmasked = model(batch["tokens"])
        flex = model(batch["tokens"], batch["positions"], attn_mask=document_block_mask(batch["segments"]))
    assert torch.allclose(flex[batch["segments"] >= 0], logits[batch["segments"] >= 0], atol=1e-5)
    b0 = logits[0, 3:8]
    b1 = logits[1, 6:11]
    assert torch.allclose(b0, b1, atol=1e-5)
    assert not torch.allclose(unmasked[0, 3:8], unmasked[1, 6:11], atol=1e-3)  # without it they differ
    # no target crosses a boundary or lands on padding
    labels = batch["labels"][0].tolist()
    assert labels[2] == -100 and labels[3] == 40 and labels[7] == -100 and labels[8:] == [-100] * 8


def test_user_errors_are_one_clear_message(tmp_path, shards):
    with pytest.raises(ValueError, match="exactly one of --data"):
        build_config(out=str(tmp_path / "r"), preset="debug")
    cfg = build_config(out=str(tmp_path / "r"), data=str(shards), preset="debug", seq_len=64, progress=False)
    with pytest.raises(ValueError, match="differs from the shards' seq_len 32"):
        train(cfg)
    cfg = build_config(out=str(tmp_path / "r"), data=str(shards), preset="debug", batch_tokens=48, progress=False)
    with pytest.raises(ValueError, match="multiple of seq_len"):
        train(cfg)
    assert not (tmp_path / "r" / "checkpoints").exists()
    assert json.loads((shards / "manifest.json").read_text())["seq_len"] == 32
