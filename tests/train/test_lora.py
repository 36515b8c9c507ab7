"""LoRA: only adapter weights train; the merged export equals base + scale * B @ A."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from codegemma.train.config import build_config
from codegemma.train.loop import train


@pytest.fixture
def base_dir(tmp_path, small_tokenizer_dir):
    from codegemma.model.checkpoint import save_model
    from codegemma.model.config import get_preset
    from codegemma.model.transformer import Gemma

    config = get_preset("debug")
    return save_model(Gemma(config).init_weights(3), config, tmp_path / "base", tokenizer_dir=small_tokenizer_dir)


def test_lora_trains_adapters_only_and_merges_exactly(tmp_path, shards, base_dir):
    from codegemma.model.checkpoint import load_model
    from codegemma.train.lora import apply_lora

    out = tmp_path / "run"
    cfg = build_config(out=str(out), data=str(shards), init=str(base_dir), lora_rank=4, lora_alpha=8.0,
                       lora_targets=["q_proj", "v_proj", "down_proj"], steps=8, lr=1e-2, warmup_steps=1,
                       val_every=0, ckpt_every=4, progress=False)
    train(cfg)
    base, config = load_model(base_dir, device="cpu", dtype=torch.float32)
    merged, _ = load_model(out / "final", device="cpu", dtype=torch.float32)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == 2 * 3 * config.num_hidden_layers
    assert (out / "final" / "tokenizer.json").is_file()  # from the --init directory

    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    scale = 8.0 / 4
    changed = 0
    for name, w in base_sd.items():
        if any(t in name for t in ("q_proj", "v_proj", "down_proj")):
            stem = f"base_model.model.model.{name.removesuffix('.weight')}"
            a, b = adapter[f"{stem}.lora_A.weight"], adapter[f"{stem}.lora_B.weight"]
            assert a.shape == (4, w.shape[1]) and b.shape == (w.shape[0], 4)
            assert torch.allclose(merged_sd[name], w + scale * b @ a, atol=1e-6)
            changed += int(b.abs().max() > 0)
        else:  # embeddings, norms, k/o/gate/up projections: untouched, bit for bit
            assert torch.equal(merged_sd[name], w), name
    assert changed == 3 * config.num_hidden_layers  # every adapter learned something

    # The checkpoint holds the adapters (and their optimiser state) only.
    state = torch.load(out / "checkpoints" / "step_00000008" / "state.pt", weights_only=True)
    assert state["model"] and all(".lora_" in k for k in state["model"])

    # The adapted model (base + LoRA modules) computes what the merged model computes.
    apply_lora(base, 4, scale, ("q_proj", "v_proj", "down_proj"))
    with torch.no_grad():
        for name, module in base.named_modules():
            if hasattr(module, "lora_a"):
                module.lora_a.weight.copy_(adapter[f"base_model.model.model.{name}.lora_A.weight"])
                module.lora_b.weight.copy_(adapter[f"base_model.model.model.{name}.lora_B.weight"])
        tokens = torch.randint(5, 500, (2, 24))
        assert torch.allclose(base(tokens), merged(tokens), atol=1e-4)


def test_resume_with_other_trainable_weights_is_refused(tmp_path, shards, base_dir):
    kw = dict(out=str(tmp_path / "run"), data=str(shards), init=str(base_dir), steps=2, val_every=0,
              export=False, progress=False)
    train(build_config(lora_rank=2, **kw))
    with pytest.raises(ValueError, match="same --lora-rank"):
        train(build_config(resume=True, **{**kw, "steps": 3}))  # full fine-tuning now: refused
