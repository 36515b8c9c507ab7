"""On a CUDA device: bf16 autocast + compiled layers + FlexAttention document masks."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)


def test_flex_document_mask_matches_the_bool_mask():
    from codegemma.model.config import get_preset
    from codegemma.model.transformer import Gemma
    from codegemma.train.data import Row, make_batch
    from codegemma.train.parallel import apply_compile
    from codegemma.train.step import CausalLMLoss, attention_mask

    # 2B-like attention (MQA, head_dim 256) at a small width.
    cfg = get_preset("debug").replace(num_attention_heads=8, num_key_value_heads=1, head_dim=256, hidden_size=256)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(2):
        segments = torch.repeat_interleave(torch.arange(5), torch.tensor([100, 300, 50, 400, 174])).int()
        rows.append(Row(torch.randint(3, 500, (1024,), generator=gen).numpy(), segments.numpy()))
    batch = {k: v.cuda() for k, v in make_batch(rows, doc_mask=True).items()}
    results = []
    for kind in ("sdpa", "flex"):
        model = Gemma(cfg).init_weights(0).cuda()
        apply_compile(model)
        module = CausalLMLoss(model, compile_loss=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module(batch["tokens"], batch["labels"], batch["positions"],
                          attention_mask(batch["segments"], kind), scale=1e-3)
        loss.backward()
        results.append((loss.item(), model.layers[0].self_attn.q_proj.weight.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=2e-2)
    g0, g1 = results[0][1], results[1][1]
    assert torch.nn.functional.cosine_similarity(g0.flatten(), g1.flatten(), dim=0) > 0.99


def test_bf16_compiled_training_learns(tmp_path):
    from codegemma.train.config import build_config
    from codegemma.train.loop import train
    from tests.train.conftest import make_shards, read_records

    data = make_shards(tmp_path / "data", seq_len=128, docs=40)
    train(build_config(out=str(tmp_path / "run"), data=str(data), preset="debug", steps=40, lr=1e-2,
                       warmup_steps=4, micro_batch=2, compile=True, val_every=20, progress=False))
    info = read_records(tmp_path / "run", "run")[0]
    assert info["precision"] == "torch.bfloat16" and info["doc_mask"] == "flex"
    losses = [r["loss"] for r in read_records(tmp_path / "run", "train")]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3
    assert "mfu" in read_records(tmp_path / "run", "train")[-1]
