"""Reuse of shifted chunks (llama.cpp's --cache-reuse): the matching rule, the re-rotation of moved
keys, and greedy output against no reuse on FIM prompts built from editor-style context chunks."""

from __future__ import annotations

import random

import pytest
import torch

from codegemma.fim.prompt import PromptBuilder
from codegemma.infer.engine import Engine, SamplingParams
from codegemma.infer.fuse import use_decode_attention
from codegemma.infer.kv import SlotView, move_positions
from codegemma.infer.prefix import common_prefix_len, reuse_plan
from codegemma.model.cache import KVCache
from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma
from tests.conftest import SAMPLE_CODE


def _llamacpp_loop(cache: list[int], prompt: list[int], n_reuse: int) -> list[tuple[int, int, int]]:
    """llama.cpp's loop (tools/server/server-context.cpp, "n_cache_reuse"), ported line by line."""
    n_past = common_prefix_len(cache, prompt)
    head_c = head_p = n_past
    moves = []
    while head_c < len(cache) and head_p < len(prompt):
        n_match = 0
        while head_c + n_match < len(cache) and head_p + n_match < len(prompt) and \
                cache[head_c + n_match] == prompt[head_p + n_match]:
            n_match += 1
        if n_match >= n_reuse:
            moves.append((head_c, head_p, n_match))
            head_c += n_match
            head_p += n_match
        else:
            head_c += 1
    return moves


def test_reuse_plan_is_llamacpps_rule():
    rng = random.Random(0)
    for trial in range(400):
        chunks = [[rng.randrange(2, 9) for _ in range(rng.randrange(1, 12))] for _ in range(6)]
        old = [1] + sum(chunks[:5], [])
        edit = rng.choice(["drop_first", "drop_middle", "swap", "append", "insert"])
        new_chunks = list(chunks[:5])
        if edit == "drop_first":
            new_chunks = new_chunks[1:] + [chunks[5]]
        elif edit == "drop_middle":
            del new_chunks[2]
        elif edit == "swap":
            new_chunks[1], new_chunks[3] = new_chunks[3], new_chunks[1]
        elif edit == "append":
            new_chunks.append(chunks[5])
        else:
            new_chunks.insert(2, chunks[5])
        new = [1] + sum(new_chunks, [])
        for n in (1, 2, 3, 5):
            start = common_prefix_len(old, new)
            assert reuse_plan(old, new, start, n) == _llamacpp_loop(old, new, n), (trial, edit, n)
    assert reuse_plan([1, 2, 3], [1, 3], 1, 0) == []  # 0 = off


def _one_layer_model(seed=0, layers=1):
    cfg = get_preset("debug").replace(num_hidden_layers=layers)
    model = Gemma(cfg).init_weights(seed)
    with torch.no_grad():  # larger weights than the init so greedy output varies (tests/infer/conftest.py)
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if "embed" in name else 0.3))
        model.embed_tokens.weight[:108] = 0.0
    use_decode_attention(model)  # the serving attention, as the engine sets it up
    return model


def test_moved_keys_equal_keys_computed_at_their_new_position():
    model = _one_layer_model(layers=2).eval()
    cfg = model.config
    cache = KVCache(cfg, 2, 64)
    chunk_a, chunk_b = list(range(200, 213)), list(range(300, 317))
    old, new = [2] + chunk_a + chunk_b, [2] + chunk_b
    with torch.inference_mode():
        for slot, ids in ((0, old), (1, new)):
            model.hidden_states(torch.tensor([ids]), torch.arange(len(ids))[None],
                                cache=SlotView(cache, torch.tensor([slot]), len(ids), tail=True))
        move_positions(cache, 0, [(1 + len(chunk_a), 1, len(chunk_b))], cfg.head_dim, cfg.rope_theta)
    n = len(new)
    # layer 0 depends only on the token and its position: exact up to rounding
    torch.testing.assert_close(cache.k[0][0, :, :n], cache.k[0][1, :, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.v[0][0, :, :n], cache.v[0][1, :, :n])
    # deeper layers also saw the dropped chunk: the approximation llama.cpp makes too
    assert not torch.allclose(cache.v[1][0, :, 1:n], cache.v[1][1, :, 1:n], atol=1e-3)


def _ring_prompts(tok, n_ctx=1024, moves=5, seed=0):
    """FIM prompts as llama.vim builds them: a ring buffer of 4 context chunks (input_extra) in
    front of the current file; each move drops the oldest chunk and adds a new one."""
    rng = random.Random(seed)
    lines = (SAMPLE_CODE * 4).splitlines(True)

    def chunk(i):
        start = rng.randrange(len(lines) - 12)
        return (f"src/chunk{i}.py", "".join(lines[start:start + 12]))

    ring = [chunk(i) for i in range(4)]
    builder = PromptBuilder(tok, n_ctx)
    prefix, suffix = "def mean(values):\n    total = 0\n    for v in values:\n        ", "\n    return total\n"
    out = []
    for i in range(moves):
        out.append(builder.fim(prefix, suffix, path="src/app.py", context=ring, max_new_tokens=12).ids)
        ring = ring[1:] + [chunk(4 + i)]
    return out


def _trace(model, tok, prompts, reuse):
    with Engine(model, tok, max_slots=1, max_seq_len=1024, cache_reuse=reuse, speculate=0) as e:
        out = [e.submit(p, SamplingParams(max_new_tokens=12)).result(timeout=120) for p in prompts]
        return [c.token_ids for c in out], [c.cached_tokens for c in out], e.stats()


def test_one_layer_model_output_is_unchanged_by_reuse(loaded):
    """With one layer a cached key or value depends only on its token and position, so reuse with
    re-rotated keys must give exactly the output of a full prefill: this checks the moves and the
    rotation end to end, through the engine, on real FIM prompts."""
    _, tok = loaded
    model = _one_layer_model()
    prompts = _ring_prompts(tok)
    plain, plain_cached, _ = _trace(model, tok, prompts, reuse=0)
    reused, reused_cached, stats = _trace(model, tok, prompts, reuse=8)
    assert reused == plain
    assert stats["reuse_chunks"] >= len(prompts) - 1 and stats["reuse_tokens"] > 0
    assert sum(reused_cached) > sum(plain_cached) + stats["reuse_tokens"] // 2


def test_trained_model_keeps_its_greedy_output_with_reuse():
    """The built-in trained model on ring-buffer moves over real files: the moved chunks' deeper
    keys/values are approximate (they saw the dropped chunk), but the suggestions stay the same
    (measured 11 of 12 identical on larger prompts; a broken rotation changes nearly all)."""
    from codegemma.model.checkpoint import load_model
    from codegemma.models import resolve_model
    from codegemma.tokenizer import Tokenizer

    try:
        path = resolve_model(None)
        model, _ = load_model(path, device="cpu", dtype=torch.float32)
    except FileNotFoundError:
        pytest.skip("the built-in model is not installed")
    tok = Tokenizer.load(path)
    prompts = _ring_prompts(tok, n_ctx=1024, moves=6, seed=1)
    plain, _, _ = _trace(model, tok, prompts, reuse=0)
    reused, _, stats = _trace(model, tok, prompts, reuse=16)
    assert stats["reuse_chunks"] >= len(prompts) - 1
    assert sum(a == b for a, b in zip(plain, reused)) >= len(prompts) - 1
