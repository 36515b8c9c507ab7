"""Loading transformers' Gemma checkpoints and saving ours: parity of logits in fp32, round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from codegemma.model.checkpoint import CheckpointError, load_model, save_model

transformers = pytest.importorskip("transformers")


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def _our_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


@pytest.mark.parametrize("kind", ["mqa", "gqa", "mha_wide"])
def test_load_hf_checkpoint_matches_transformers_logits(batch_tokens, hf_model_dir, kind):
    hf, path = hf_model_dir(kind)
    ours, config = load_model(path, device="cpu")
    assert config.num_key_value_heads == hf.config.num_key_value_heads
    assert next(ours.parameters()).dtype == torch.float32  # CPU default
    tokens = batch_tokens(config.vocab_size)
    torch.testing.assert_close(_our_logits(ours, tokens), _hf_logits(hf, tokens), atol=1e-5, rtol=0)


def test_non_default_rope_theta_is_read_from_rope_parameters(hf_model_dir):
    hf, path = hf_model_dir("gqa")  # rope_theta 500 in transformers 5's rope_parameters
    _, config = load_model(path, device="cpu")
    assert config.rope_theta == 500.0


def test_round_trip_codegemma_save_transformers_load(batch_tokens, hf_model_dir, tmp_path):
    hf, path = hf_model_dir("mha_wide")
    ours, config = load_model(path, device="cpu")
    out = save_model(ours, config, tmp_path / "ours")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors"]
    names = set(load_file(out / "model.safetensors"))
    assert all(n.startswith("model.") for n in names) and "lm_head.weight" not in names
    back = transformers.GemmaForCausalLM.from_pretrained(out).eval()
    tokens = batch_tokens(config.vocab_size)
    assert torch.equal(_hf_logits(back, tokens), _our_logits(ours, tokens))
    assert not list(tmp_path.glob(".ours.*"))  # no temp dirs left behind


def test_sharded_save_loads_in_both(batch_tokens, hf_model_dir, tmp_path):
    hf, path = hf_model_dir("gqa")
    ours, config = load_model(path, device="cpu")
    out = save_model(ours, config, tmp_path / "sharded", max_shard_bytes=60_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == 4 * config.num_parameters()
    assert set(index["weight_map"]) == {f"model.{n}" for n in ours.state_dict()}
    tokens = batch_tokens(config.vocab_size)
    again, _ = load_model(out, device="cpu")
    assert torch.equal(_our_logits(again, tokens), _our_logits(ours, tokens))
    back = transformers.GemmaForCausalLM.from_pretrained(out).eval()
    assert torch.equal(_hf_logits(back, tokens), _our_logits(ours, tokens))


def test_save_in_bfloat16_records_dtype(hf_model_dir, tmp_path):
    _, path = hf_model_dir("mqa")
    ours, config = load_model(path, device="cpu")
    out = save_model(ours, config, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert all(t.dtype == torch.bfloat16 for t in load_file(out / "model.safetensors").values())
    again, cfg = load_model(out, dtype=None, device="cpu")
    assert cfg.torch_dtype == "bfloat16" and next(again.parameters()).dtype == torch.float32
    as_bf16, _ = load_model(out, dtype=torch.bfloat16, device="cpu")
    assert next(as_bf16.parameters()).dtype == torch.bfloat16


def _rewrite(path, fn):
    """Apply fn to the state dict of path/model.safetensors in place."""
    f = path / "model.safetensors"
    state = fn(load_file(f))
    save_file(state, str(f), metadata={"format": "pt"})


def test_names_without_model_prefix_and_tied_lm_head_are_accepted(batch_tokens, hf_model_dir):
    hf, path = hf_model_dir("mqa")

    def strip_and_add_head(state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
        state["lm_head.weight"] = state["embed_tokens.weight"].clone()
        return state

    _rewrite(path, strip_and_add_head)
    ours, config = load_model(path, device="cpu")
    tokens = batch_tokens(config.vocab_size)
    torch.testing.assert_close(_our_logits(ours, tokens), _hf_logits(hf, tokens), atol=1e-5, rtol=0)


def test_untied_lm_head_is_refused(hf_model_dir):
    _, path = hf_model_dir("mqa")

    def add_other_head(state):
        state["lm_head.weight"] = state["model.embed_tokens.weight"] + 1.0
        return state

    _rewrite(path, add_other_head)
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        load_model(path, device="cpu")


def test_jax_padded_embedding_is_trimmed_with_a_note(batch_tokens, hf_model_dir):
    hf, path = hf_model_dir("mqa")

    def pad(state):
        emb = state["model.embed_tokens.weight"]
        state["model.embed_tokens.weight"] = torch.cat([emb, torch.randn(128, emb.shape[1])])
        return state

    _rewrite(path, pad)
    with pytest.warns(UserWarning, match="448 rows"):
        ours, config = load_model(path, device="cpu")
    assert ours.embed_tokens.weight.shape[0] == 320
    tokens = batch_tokens(config.vocab_size)
    torch.testing.assert_close(_our_logits(ours, tokens), _hf_logits(hf, tokens), atol=1e-5, rtol=0)


def test_save_refuses_to_replace_a_non_model_directory(hf_model_dir, tmp_path):
    _, path = hf_model_dir("mqa")
    ours, config = load_model(path, device="cpu")
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a model directory"):
        save_model(ours, config, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_save_replaces_an_existing_checkpoint_atomically(hf_model_dir, tmp_path):
    _, path = hf_model_dir("mqa")
    ours, config = load_model(path, device="cpu")
    out = tmp_path / "ckpt"
    save_model(ours, config, out, max_shard_bytes=20_000)
    assert (out / "model.safetensors.index.json").exists()
    save_model(ours, config, out)  # unsharded now: no stale shards may survive
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tokenizer_files_are_copied(hf_model_dir, tmp_path):
    _, path = hf_model_dir("mqa")
    ours, config = load_model(path, device="cpu")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    out = save_model(ours, config, tmp_path / "with-tok", tokenizer_dir=tok)
    assert (out / "tokenizer.json").read_text() == "{}"


def test_a_failed_save_leaves_the_previous_checkpoint_intact(hf_model_dir, tmp_path, monkeypatch, batch_tokens):
    import safetensors.torch

    _, path = hf_model_dir("mqa")
    ours, config = load_model(path, device="cpu")
    out = save_model(ours, config, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []
    real_save = safetensors.torch.save_file

    def crash_on_second_shard(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")  # the real failure cannot be provoked portably
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_on_second_shard)
    with torch.no_grad():
        ours.norm.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_model(ours, config, out, max_shard_bytes=20_000)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
