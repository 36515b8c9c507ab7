"""The engine against references: transformers' generate, an uncached forward, and itself run alone."""

from __future__ import annotations

import threading

import pytest
import torch

from codegemma.infer.engine import Engine, QueueFullError, SamplingParams



def _hf_greedy(model_dir, ids: list[int], n: int, stop_ids: list[int]) -> list[int]:
    transformers = pytest.importorskip("transformers")
    hf = transformers.GemmaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      max_new_tokens=n, do_sample=False, eos_token_id=stop_ids, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_matches_transformers_generate(model_dir, make_engine, P):
    engine = make_engine()
    params = SamplingParams(max_new_tokens=32)
    batch = engine.generate(P, params)  # unequal lengths, decoded together
    for prompt, got in zip(P, batch):
        ids = prompt
        want = _hf_greedy(model_dir, ids, 32, sorted(engine.stop_ids))
        assert got.token_ids == want, prompt
        assert got.completion_tokens == 32 and got.finish_reason == "length"
        assert got.prompt_tokens == len(ids)
    assert len({tuple(c.token_ids) for c in batch}) == len(P)  # the model is not degenerate


def _run_alone(loaded, prompt, params):
    model, tok = loaded
    with Engine(model, tok, max_slots=1, max_seq_len=512) as e:
        return e.submit(prompt, params).result()


def test_continuous_batching_matches_each_request_alone(loaded, make_engine, P):
    params = [SamplingParams(max_new_tokens=n) for n in (20, 5, 12, 30)]
    params[2] = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.95, seed=7)
    params[3] = SamplingParams(max_new_tokens=30, temperature=1.2, seed=3, repetition_penalty=1.3)
    alone = [_run_alone(loaded, p, sp) for p, sp in zip(P, params)]
    engine = make_engine(max_slots=2)  # 4 requests over 2 slots: some wait, join and leave mid-run
    first = engine.submit(P[0], params[0])
    next(iter(first.events()))  # the first request is decoding before the others arrive
    rest = [engine.submit(p, sp) for p, sp in zip(P[1:], params[1:])]
    got = [first.result()] + [h.result() for h in rest]
    for a, b in zip(alone, got):
        assert a.token_ids == b.token_ids and a.text == b.text
    assert engine.stats()["requests_finished"] == 4


def test_prefix_reuse_gives_identical_output_and_counts_cached_tokens(loaded, make_engine, P):
    model, tok = loaded
    base = P[1]
    longer = base + tok.encode("\n        self.name = name")
    params = SamplingParams(max_new_tokens=10)
    fresh = [_run_alone(loaded, p, params) for p in (base, longer, base[:-3])]

    engine = make_engine(max_slots=2)
    first = engine.submit(base, params).result()
    assert first.cached_tokens == 0
    second = engine.submit(longer, params).result()  # the keystroke case: same prompt, more typed
    assert second.cached_tokens == len(base)
    third = engine.submit(base[:-3], params).result()  # a prompt that is a prefix of the cache
    assert third.cached_tokens == len(base) - 4  # the last prompt token is run again for logits
    assert [c.token_ids for c in (first, second, third)] == [c.token_ids for c in fresh]
    stats = engine.stats()
    assert stats["prefix_cache_hits"] == 2
    assert stats["prefix_cache_tokens"] == len(base) + len(base) - 4
    assert stats["prefill_tokens"] == len(base) + (len(longer) - len(base)) + 1


def test_warm_fills_the_cache_without_generating(make_engine, loaded, P):
    _, tok = loaded
    engine = make_engine(max_slots=1)
    ids = P[3]
    assert engine.warm(ids) == len(ids)
    c = engine.submit(ids + tok.encode("x = 1"), SamplingParams(max_new_tokens=3)).result()
    assert c.cached_tokens == len(ids)
    assert engine.stats()["tokens_generated"] == 3


def test_seeds_reproduce_and_differ(make_engine, P):
    engine = make_engine()
    sp = lambda seed: SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.98, seed=seed)  # noqa: E731
    a, b, c = [engine.submit(P[0], sp(s)).result() for s in (11, 11, 12)]
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_streamed_deltas_concatenate_to_the_final_text(make_engine, P):
    engine = make_engine()
    h = engine.submit(P[1], SamplingParams(max_new_tokens=40, temperature=0.8, seed=5))
    events = list(h.events())
    c = h.result()
    assert "".join(e.text for e in events) == c.text
    assert [t for e in events for t in e.token_ids] == c.token_ids


def test_prompt_progress_events_come_before_the_text_and_change_nothing(make_engine, P):
    engine = make_engine(prefill_chunk=4)
    params = SamplingParams(max_new_tokens=6)
    plain = engine.submit(P[1], params).result()
    engine2 = make_engine(prefill_chunk=4)
    h = engine2.submit(P[1], params, progress=True)
    events = list(h.events())
    reports = [e.progress for e in events if e.progress is not None]
    assert [(p.total, p.cache, p.processed) for p in reports] == \
        [(len(P[1]), 0, n) for n in [0, *range(4, len(P[1]), 4), len(P[1])]]
    first_text = next(i for i, e in enumerate(events) if e.token_ids)
    assert all(e.progress is not None for e in events[:first_text])
    assert all(e.progress is None for e in events[first_text:])
    assert h.result().token_ids == plain.token_ids  # the same output with or without reports


def test_async_events(make_engine, P):
    import asyncio

    engine = make_engine()

    async def collect():
        h = engine.submit(P[0], SamplingParams(max_new_tokens=16))
        text = "".join([e.text async for e in h.aevents()])
        return text, await h.aresult()

    text, c = asyncio.run(collect())
    assert text == c.text and c.completion_tokens == 16


def test_stop_string_spanning_tokens_is_cut_and_never_streamed(make_engine, loaded, P):
    _, tok = loaded
    engine = make_engine()
    full = engine.submit(P[1], SamplingParams(max_new_tokens=32)).result()
    pieces = [tok.decode([t]) for t in full.token_ids]
    # A stop string made of the end of one token's text and the start of the next one's.
    k = next(i for i in range(3, len(pieces) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]
    expected = full.text[:full.text.index(stop)]
    h = engine.submit(P[1], SamplingParams(max_new_tokens=32, stop=("never-there", stop)))
    streamed = "".join(e.text for e in h.events())
    c = h.result()
    assert c.text == expected == streamed
    assert c.finish_reason == "stop" and c.stop_text == stop
    assert len(c.token_ids) < 32


def test_stop_token_ends_generation(make_engine, loaded, P):
    _, tok = loaded
    engine = make_engine()
    ids = engine.submit(P[1], SamplingParams(max_new_tokens=16)).result().token_ids
    k = next(i for i in range(2, 16) if ids[i] not in ids[:i])
    engine.stop_ids.add(ids[k])  # as if it were <eos>
    c = engine.submit(P[1], SamplingParams(max_new_tokens=16)).result()
    assert c.finish_reason == "stop" and c.token_ids == ids[:k + 1] and c.stop_token_id == ids[k]
    assert c.text == tok.decode(ids[:k])


def test_cancel_frees_the_slot_and_admits_the_next_request(make_engine, P):
    engine = make_engine(max_slots=1, speculate=0)  # no drafts that could end it early
    long = engine.submit(P[0], SamplingParams(max_new_tokens=480))
    next(iter(long.events()))
    waiting = engine.submit(P[2], SamplingParams(max_new_tokens=4))
    assert engine.stats()["queue_length"] == 1
    long.cancel()
    assert long.result(timeout=5).finish_reason == "cancelled"
    assert waiting.result(timeout=30).completion_tokens == 4  # it got the freed slot
    assert long.result().completion_tokens < 480
    assert engine.stats()["requests_cancelled"] == 1


def test_cancel_while_queued(make_engine, P):
    engine = make_engine(max_slots=1, speculate=0)  # no drafts that could end it early
    long = engine.submit(P[0], SamplingParams(max_new_tokens=480))
    queued = engine.submit(P[2], SamplingParams(max_new_tokens=4))
    queued.cancel()
    assert queued.result(timeout=5).finish_reason == "cancelled"
    long.cancel()
    assert engine.stats()["queue_length"] == 0


def test_queue_full_and_too_long_prompts(make_engine, P):
    engine = make_engine(max_slots=1, max_queue=1, max_seq_len=64, speculate=0)
    running = engine.submit(P[0], SamplingParams(max_new_tokens=40))
    next(iter(running.events()))
    queued = engine.submit(P[0], SamplingParams(max_new_tokens=4))
    with pytest.raises(QueueFullError):
        engine.submit(P[0], SamplingParams(max_new_tokens=4))
    with pytest.raises(ValueError, match="exceed max_seq_len"):
        engine.submit(list(range(5, 60)), SamplingParams(max_new_tokens=10))
    with pytest.raises(ValueError, match=r"token ids in \[0, "):
        engine.submit([2, 100000], SamplingParams())
    running.cancel()
    assert queued.result(timeout=30).completion_tokens == 4


def test_time_limit_stops_right_after_a_newline(make_engine, loaded, P):
    """llama.cpp's t_max_predict_ms: once the time is up, generation ends after the next token whose
    text holds a newline, so the suggestion ends at a line end."""
    _, tok = loaded
    engine = make_engine(max_slots=1)
    full = engine.submit(P[0], SamplingParams(max_new_tokens=200)).result(timeout=60)
    k = next(i for i, t in enumerate(full.token_ids) if "\n" in tok.decode(full.token_ids[:i + 1])[
        len(tok.decode(full.token_ids[:i])):])
    c = engine.submit(P[0], SamplingParams(max_new_tokens=200, max_time_ms=1e-3)).result(timeout=60)
    assert c.finish_reason == "time" and c.token_ids == full.token_ids[:k + 1] and c.text.endswith("\n")


def test_logprobs_raw_and_after_the_samplers(make_engine, loaded, P):
    """logprobs: log-softmax of the raw logits per token (OpenAI) with the top alternatives; probs:
    the distribution the sampler chain left (llama.cpp's post-sampling probabilities), as logs."""
    import math

    from codegemma.infer.samplers import TokenChooser

    model, _ = loaded
    engine = make_engine(max_slots=1)
    for params in (SamplingParams(max_new_tokens=3, logprobs=5),
                   SamplingParams(max_new_tokens=3, logprobs=3, temperature=0.9, top_k=4, seed=1)):
        h = engine.submit(P[1], params)
        streamed = [lp for ev in h.events() for lp in ev.logprobs]
        c = h.result()
        assert [lp.token_id for lp in c.logprobs] == c.token_ids == [p.token_id for p in c.probs]
        assert streamed == c.logprobs
        with torch.no_grad():
            raw = model(torch.tensor([P[1] + c.token_ids[:-1]]))[0, len(P[1]) - 1:]
        want = torch.log_softmax(raw.float(), -1)
        for i, lp in enumerate(c.logprobs):
            assert math.isclose(lp.logprob, float(want[i, lp.token_id]), abs_tol=1e-4)
            assert [t for t, _ in lp.top] == want[i].topk(params.logprobs).indices.tolist()
        post = TokenChooser().distribution(raw, [params] * len(c.token_ids))
        for i, p in enumerate(c.probs):
            assert math.isclose(math.exp(p.logprob), float(post[i, p.token_id]), abs_tol=1e-4)
            kept = int((post[i] > 0).sum())
            assert sum(v > -math.inf for _, v in p.top) == min(kept, params.logprobs)


def test_submit_is_thread_safe(make_engine, P):
    engine = make_engine(max_slots=3)
    results = {}

    def worker(i):
        results[i] = engine.submit(P[i % 4], SamplingParams(max_new_tokens=6)).result()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert results[i].token_ids == results[i % 4].token_ids
    assert engine.stats()["requests_finished"] == 8


def test_close_cancels_running_and_waiting_requests(make_engine, P):
    engine = make_engine(max_slots=1, speculate=0)
    running = engine.submit(P[0], SamplingParams(max_new_tokens=480))
    next(iter(running.events()))
    waiting = engine.submit(P[1], SamplingParams(max_new_tokens=4))
    engine.close()
    assert running.result(timeout=30).finish_reason == "cancelled"
    assert waiting.result(timeout=30).finish_reason == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(P[0])


def test_a_failed_forward_fails_its_request_and_the_engine_goes_on(loaded, P):
    """A prefill that raises (an OOM, say) fails that request alone, in one clear EngineError; the
    slot's cache is forgotten and the next requests are served exactly as before. The fault is
    injected from outside: the model's own method is wrapped for this test only."""
    from codegemma.infer.requests import EngineError

    import copy

    model, tok = loaded
    params = SamplingParams(max_new_tokens=8)
    want = _run_alone(loaded, P[0], params).token_ids
    poison = 97  # a token the other prompts do not contain

    faulty = copy.deepcopy(model)
    real = faulty.hidden_states

    def failing(tokens, *args, **kwargs):
        if tokens.shape[1] > 1 and bool((tokens == poison).any()):
            raise RuntimeError("CUDA out of memory (injected)")
        return real(tokens, *args, **kwargs)

    faulty.hidden_states = failing  # this model instance's prefill fails on the poison token
    engine = Engine(faulty, tok, max_slots=2, max_seq_len=512)
    bad = engine.submit(P[1] + [poison, poison], params)
    good = engine.submit(P[0], params)
    with pytest.raises(EngineError, match="out of memory"):
        bad.result(timeout=30)
    assert good.result(timeout=30).token_ids == want
    again = engine.submit(P[1] + [poison], SamplingParams(max_new_tokens=2))
    with pytest.raises(EngineError):
        again.result(timeout=30)
    assert engine.submit(P[0], params).result(timeout=30).token_ids == want
    assert engine.stats()["active_slots"] == 0
    engine.close()
