"""Inference speed of the Engine on one GPU, against the memory-bandwidth limit and transformers.

For each preset (random weights, bf16), measured in one run on the same device:
  - copy bandwidth: a device-to-device copy of a 2 GiB buffer (bytes read + written per second);
  - batch-1 decode tokens/s of the Engine (per decode mode: CUDA graphs of eager kernels, and
    torch.compile + CUDA graphs) against the bandwidth limit = bandwidth / weight bytes per token
    (2 bytes x all parameters: every layer plus the tied embedding read as the output head);
  - transformers' GemmaForCausalLM.generate (eager, same weights, same GPU) batch-1 decode tokens/s;
  - FIM latency for an editor-like trace: a 2k-token PSM prompt, 16 new tokens, successive
    keystrokes; p50/p99 cold (a new file at every keystroke: no reusable prefix, no previous
    completion to draft from), warm (each keystroke inserts one random token before the cursor;
    the prefix cache holds the previous keystroke), warm without speculative decoding (the
    engine before drafts), and typed (each keystroke types the first token of the previous
    suggestion, the case speculative decoding from previous completions is made for);
  - throughput (generated tokens/s) at 1, 8 and 32 concurrent requests (128-token prompts,
    128 new tokens), against transformers' batched generate on the same prompts.

Prints a table, writes JSON (--out) and appends to benchmarks/RESULTS.md under "Inference".
Control tokens get zero embedding rows so greedy runs never stop early (tied head: logit 0).

    PYTHONPATH=. python3 benchmarks/decode_speed.py --presets 2b,7b --out results.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegemma.infer.engine import Engine, SamplingParams  # noqa: E402
from codegemma.model.config import get_preset  # noqa: E402
from codegemma.model.transformer import Gemma  # noqa: E402


def log(*a):
    print(*a, flush=True)


def sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def copy_bandwidth(device: str, gib: float = 2.0, iters: int = 20) -> float:
    n = int(gib * (1 << 30)) // 2
    x = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    t0 = sync_time()
    for _ in range(iters):
        y.copy_(x)
    dt = sync_time() - t0
    del x, y
    return 2 * n * 2 * iters / dt  # bytes read + written per second


def build(preset: str, device: str):
    """transformers' model and ours sharing the same bf16 weights on the GPU (one copy)."""
    import transformers

    cfg = get_preset(preset)
    hf_cfg = transformers.GemmaConfig(**{k: v for k, v in cfg.to_hf_dict().items()
                                         if k not in ("architectures", "model_type", "torch_dtype")})
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        hf = transformers.GemmaForCausalLM._from_config(hf_cfg, dtype=dtype).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.02)
        hf.model.embed_tokens.weight[:108] = 0.0
    with torch.device("meta"):
        ours = Gemma(cfg)
    state = {k[len("model."):]: v for k, v in hf.state_dict().items() if k.startswith("model.")}
    ours.load_state_dict(state, assign=True, strict=True)
    return hf, ours.eval(), cfg


def tokenizer():
    from codegemma.tokenizer import Tokenizer, train_bpe_tokenizer

    text = "def add(a, b):\n    return a + b\n\nclass A:\n    pass\n" * 4
    return Tokenizer(backend=train_bpe_tokenizer([text], 512), source="benchmark")


def rand_ids(n: int, gen: torch.Generator, vocab: int) -> list[int]:
    return torch.randint(108, vocab, (n,), generator=gen).tolist()


def hf_decode_rate(hf, prompt: list[int], n: int) -> float:
    """Decode tokens/s of transformers' generate: (time for n tokens - time for 1) / (n - 1)."""
    ids = torch.tensor([prompt], device=hf.device)
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)

    def run(k):
        t0 = sync_time()
        out = hf.generate(ids, max_new_tokens=k, min_new_tokens=k, **kw)
        dt = sync_time() - t0
        assert out.shape[1] == len(prompt) + k
        return dt

    run(4)
    t1, tn = run(1), run(n)
    return (n - 1) / (tn - t1)


def hf_batch_throughput(hf, prompts: list[list[int]], n: int) -> float:
    ids = torch.tensor(prompts, device=hf.device)
    hf.generate(ids[:, :8], max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    t0 = sync_time()
    out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    dt = sync_time() - t0
    return (out.shape[1] - ids.shape[1]) * len(prompts) / dt


def engine_decode_rate(engine: Engine, prompt: list[int], n: int) -> float:
    """Plain decode (speculation off: the rate of the decode step itself)."""
    p = SamplingParams(max_new_tokens=n)
    engine.submit(prompt, p).result()  # capture the graphs this run needs (and compile)
    c = engine.submit(prompt, p).result()
    assert c.completion_tokens == n, c.finish_reason
    # The decode step alone (input copy + graph replay, no sampling or engine bookkeeping), into
    # the scratch slot: how much of a token's time the engine's Python side adds.
    pos = len(prompt) + n // 2
    engine.runner([prompt[-1]], [pos], [engine.max_slots])
    t0 = sync_time()
    for _ in range(50):
        engine.runner([prompt[-1]], [pos], [engine.max_slots])
    step_ms = (sync_time() - t0) / 50 * 1000
    log(f"    decode step alone {step_ms:.2f} ms; per token in the engine {c.decode_ms / (n - 1):.2f} ms")
    return (n - 1) / (c.decode_ms / 1000), step_ms


def fim_trace(engine: Engine, gen, vocab: int, keystrokes: int, kind: str) -> list[float]:
    """kind: "cold" (fresh file each keystroke), "warm" (one random token inserted before the
    cursor per keystroke) or "typed" (the first token of the previous suggestion typed)."""
    tok = engine.tokenizer
    pre, suf = rand_ids(1800, gen, vocab), rand_ids(200, gen, vocab)
    fp, fs, fm = (tok.token_id(n) for n in ("fim_prefix", "fim_suffix", "fim_middle"))
    params = SamplingParams(max_new_tokens=16)
    lat, parts = [], []
    before = engine.stats()
    for i in range(keystrokes + 2):
        if kind == "cold":
            pre, suf = rand_ids(1800, gen, vocab), rand_ids(200, gen, vocab)
        prompt = [tok.bos_id, fp] + pre + [fs] + suf + [fm]
        t0 = time.perf_counter()
        c = engine.submit(prompt, params).result()
        lat.append((time.perf_counter() - t0) * 1000)
        parts.append((c.queue_ms, c.prompt_ms, c.decode_ms, c.cached_tokens))
        assert c.completion_tokens == 16
        if kind == "warm":
            pre = pre + rand_ids(1, gen, vocab)
        elif kind == "typed":
            pre = pre + c.token_ids[:1]
    after = engine.stats()
    n = len(parts[2:])
    log(f"    {kind}: mean queue/prefill/decode ms: " + " / ".join(
        f"{sum(p[j] for p in parts[2:]) / n:.1f}" for j in range(3)) +
        f"; mean cached tokens {sum(p[3] for p in parts[2:]) / n:.0f}; decode passes "
        f"{after['decode_steps'] - before['decode_steps']} for {len(parts)} requests; drafts accepted "
        f"{after['spec_accepted_tokens'] - before['spec_accepted_tokens']}/{after['spec_draft_tokens'] - before['spec_draft_tokens']}")
    return lat[2:]  # the first two capture graphs / fill the cache


def engine_throughput(engine: Engine, prompts: list[list[int]], n: int) -> float:
    p = SamplingParams(max_new_tokens=n)
    [h.result() for h in [engine.submit(q, p) for q in prompts]]  # warm-up: graphs for this batch
    t0 = time.perf_counter()
    results = [h.result() for h in [engine.submit(q, p) for q in prompts]]
    dt = time.perf_counter() - t0
    return sum(c.completion_tokens for c in results) / dt


def profile_decode(engine: Engine, prompt: list[int]) -> None:
    """Kernel time table for batch-1 decode steps at a ~2k context (diagnosis, not a figure)."""
    from torch.profiler import ProfilerActivity, profile

    engine.submit(prompt, SamplingParams(max_new_tokens=8)).result()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        c = engine.submit(prompt, SamplingParams(max_new_tokens=24)).result()
    log(f"    profiled request: prefill {c.prompt_ms:.1f} ms, decode {c.decode_ms / 23:.2f} ms/token")
    log(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


def probe(model, cfg, device: str, label: str) -> dict:
    """Diagnosis: eager prefill time (host launch and total) and single GEMV bandwidth."""
    from torch.nn.attention import sdpa_kernel

    from codegemma.infer.kv import SlotView
    from codegemma.model.cache import KVCache

    from codegemma.infer.graphs import MASKED_SDPA_BACKENDS

    res = {}
    dtype = next(model.parameters()).dtype
    cache = KVCache(cfg, 1, 2304, device=device, dtype=dtype)
    slot = torch.tensor([0], device=device)
    with torch.inference_mode(), sdpa_kernel(MASKED_SDPA_BACKENDS):
        for t in (200, 2000):
            toks = torch.randint(108, cfg.vocab_size, (1, t), device=device)
            pos = torch.arange(t, device=device)[None]
            host, total = [], []
            for i in range(6):
                t0 = sync_time()
                model.hidden_states(toks, pos, cache=SlotView(cache, slot, t))
                t1 = time.perf_counter()
                t2 = sync_time()
                if i:
                    host.append((t1 - t0) * 1000)
                    total.append((t2 - t0) * 1000)
            res[f"prefill_{t}"] = {"host_ms": pct(host, 50), "total_ms": pct(total, 50)}
        x = torch.randn(1, 1, cfg.hidden_size, device=device, dtype=dtype)
        layer = model.layers[0]
        weights = {"lm_head": model.embed_tokens.weight, "down": layer.mlp.down_proj.weight,
                   "o_proj": layer.self_attn.o_proj.weight}
        weights["gate_up" if hasattr(layer.mlp, "gate_up_weight") else "gate"] = \
            getattr(layer.mlp, "gate_up_weight", layer.mlp.gate_proj.weight)
        weights["qkv" if hasattr(layer.self_attn, "qkv_weight") else "q"] = \
            getattr(layer.self_attn, "qkv_weight", layer.self_attn.q_proj.weight)
        for name, w in weights.items():
            xi = x if w.shape[1] == cfg.hidden_size else torch.randn(1, 1, w.shape[1], device=device, dtype=w.dtype)
            for _ in range(3):
                torch.nn.functional.linear(xi, w)
            t0 = sync_time()
            for _ in range(50):
                torch.nn.functional.linear(xi, w)
            us = (sync_time() - t0) / 50 * 1e6
            res[f"gemv_{name}"] = {"us": us, "GBps": w.numel() * 2 / us / 1e3}
    del cache
    log(f"    probe ({label}): " + "; ".join(
        f"{k} " + " ".join(f"{a}={b:.1f}" for a, b in v.items()) for k, v in res.items()))
    return res


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_preset(preset: str, modes: list[str], sections: set[str], bw: float, out: dict, device: str,
                 compile_prefill: bool = False, max_slots: int = 32, keystrokes: int = 20,
                 n_dec: int = 256) -> None:
    res = out.setdefault(preset, {})
    t_start = time.perf_counter()
    hf, model, cfg = build(preset, device)
    weight_bytes = 2 * cfg.num_parameters()
    limit = bw / weight_bytes
    res.update(weight_bytes=weight_bytes, bandwidth_limit_tok_s=limit)
    log(f"[{preset}] built in {time.perf_counter() - t_start:.1f}s; weight bytes/token {weight_bytes / 1e9:.2f} GB; "
        f"limit {limit:.0f} tok/s")
    tok = tokenizer()
    gen = torch.Generator().manual_seed(0)
    prompt = rand_ids(32, gen, cfg.vocab_size)
    if "decode" in sections:
        try:
            r = hf_decode_rate(hf, prompt, 128)
            res["hf_decode_tok_s"] = r
            log(f"[{preset}] transformers generate batch-1: {r:.1f} tok/s ({r / limit:.1%} of limit)")
        except Exception as exc:  # record and go on: one failed section must not lose the others
            res["hf_decode_error"] = repr(exc)
            traceback.print_exc()
    if "probe" in sections:
        from codegemma.infer.fuse import fuse_projections

        res["probe_unfused"] = probe(model, cfg, device, "unfused")
        fuse_projections(model)  # what the engine does on GPU (idempotent)
        res["probe_fused"] = probe(model, cfg, device, "fused")
    for mode in modes:
        t0 = time.perf_counter()
        try:
            with Engine(model, tok, max_slots=max_slots, max_seq_len=2304, decode=mode,
                        compile_prefill=compile_prefill) as engine:
                m = res.setdefault(mode + ("+prefill" if compile_prefill and mode == "compile" else ""), {})
                spec = engine.speculate
                engine.speculate = 0  # decode rate, profile, throughput: the plain decode step
                if "decode" in sections:
                    r, step_ms = engine_decode_rate(engine, prompt, n_dec)
                    m["decode_tok_s"], m["decode_frac_of_limit"], m["step_only_ms"] = r, r / limit, step_ms
                    log(f"[{preset}/{mode}] engine batch-1 decode: {r:.1f} tok/s ({r / limit:.1%} of limit, "
                        f"{r / res.get('hf_decode_tok_s', float('nan')):.2f}x transformers) "
                        f"[{time.perf_counter() - t0:.0f}s]")
                if "fim" in sections:
                    nospec = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "warm")
                    engine.speculate = spec
                    cold = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "cold")
                    warm = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "warm")
                    typed = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "typed")
                    for key, lat in (("cold", cold), ("warm", warm), ("warm_nospec", nospec), ("typed", typed)):
                        m[f"fim_{key}_ms"] = {"p50": pct(lat, 50), "p99": pct(lat, 99)}
                    log(f"[{preset}/{mode}] FIM 2k ctx +16 tok p50 (p99) ms: cold {pct(cold, 50):.1f} ({pct(cold, 99):.1f}); "
                        f"warm {pct(warm, 50):.1f} ({pct(warm, 99):.1f}); warm without speculation "
                        f"{pct(nospec, 50):.1f} ({pct(nospec, 99):.1f}); typed suggestion {pct(typed, 50):.1f} "
                        f"({pct(typed, 99):.1f}); warm/cold {pct(warm, 50) / pct(cold, 50):.2f}, typed/cold "
                        f"{pct(typed, 50) / pct(cold, 50):.2f} [{time.perf_counter() - t0:.0f}s]")
                    engine.speculate = 0
                if "throughput" in sections:
                    tp = m.setdefault("throughput_tok_s", {})
                    for n in (1, 8, 32):
                        prompts = [rand_ids(128, gen, cfg.vocab_size) for _ in range(n)]
                        tp[n] = engine_throughput(engine, prompts, 128)
                        log(f"[{preset}/{mode}] throughput {n:2d} concurrent: {tp[n]:.0f} tok/s "
                            f"[{time.perf_counter() - t0:.0f}s]")
                if "profile" in sections:
                    # Last: with CUDA graphs in use the profiler leaves CUPTI attached after it ends
                    # (pytorch/pytorch#144455), which slowed later eager prefills ~2x in one run.
                    profile_decode(engine, prompt + rand_ids(1800, gen, cfg.vocab_size))
                m["stats"] = engine.stats()
        except Exception as exc:
            res.setdefault(mode, {})["error"] = repr(exc)
            traceback.print_exc()
        if device == "cuda":
            torch.cuda.empty_cache()
    if "throughput" in sections and "hf" in sections:
        htp = res.setdefault("hf_throughput_tok_s", {})
        for n in (8, 32):
            try:
                htp[n] = hf_batch_throughput(hf, [rand_ids(128, gen, cfg.vocab_size) for _ in range(n)], 128)
                log(f"[{preset}] transformers batched generate {n}: {htp[n]:.0f} tok/s")
            except Exception as exc:
                htp[f"{n}_error"] = repr(exc)
                traceback.print_exc()
    del hf, model
    if device == "cuda":
        torch.cuda.empty_cache()


def table(out: dict) -> str:
    nan = float("nan")
    lines = ["| preset | mode | batch-1 decode tok/s | % of bandwidth limit | vs transformers | FIM cold p50/p99 ms "
             "| FIM warm p50/p99 ms | warm/cold | warm, no speculation p50 | typed suggestion p50 (/cold) "
             "| throughput 1/8/32 tok/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset, res in out["presets"].items():
        hf_rate = res.get("hf_decode_tok_s")
        lines.append(f"| {preset} | transformers generate (eager) | {hf_rate or nan:.1f} | "
                     f"{(hf_rate or nan) / res.get('bandwidth_limit_tok_s', 1):.1%} | 1.00x | | | | | | "
                     f"{'/'.join(f'{v:.0f}' for k, v in res.get('hf_throughput_tok_s', {}).items() if isinstance(v, float))} (8/32) |")
        for mode, m in res.items():
            if not isinstance(m, dict) or mode.startswith(("hf_", "probe_")):
                continue
            if "error" in m:
                lines.append(f"| {preset} | {mode} | error: {m['error'][:80]} | | | | | | | | |")
                continue
            dec = m.get("decode_tok_s", nan)
            cold, warm = m.get("fim_cold_ms", {}), m.get("fim_warm_ms", {})
            nospec, typed = m.get("fim_warm_nospec_ms", {}), m.get("fim_typed_ms", {})
            c50 = cold.get("p50", nan)
            tp = m.get("throughput_tok_s", {})
            lines.append(
                f"| {preset} | engine {mode} | {dec:.1f} | {m.get('decode_frac_of_limit', nan):.1%} | "
                f"{dec / hf_rate if hf_rate else nan:.2f}x | "
                f"{c50:.1f} / {cold.get('p99', nan):.1f} | "
                f"{warm.get('p50', nan):.1f} / {warm.get('p99', nan):.1f} | {warm.get('p50', nan) / c50:.2f} | "
                f"{nospec.get('p50', nan):.1f} | {typed.get('p50', nan):.1f} ({typed.get('p50', nan) / c50:.2f}) | "
                f"{'/'.join(f'{tp[k]:.0f}' for k in tp)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="2b,7b")
    ap.add_argument("--modes", default="graphs,compile", help="decode modes: eager, graphs, compile")
    ap.add_argument("--sections", default="decode,fim,throughput,hf")
    ap.add_argument("--out", default=None, help="JSON output file")
    ap.add_argument("--results-md", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--compile-prefill", action="store_true", help="Engine(compile_prefill=True) in compile mode")
    ap.add_argument("--max-slots", type=int, default=32, help="Engine max_slots (fewer: fewer graphs to capture)")
    ap.add_argument("--keystrokes", type=int, default=20, help="keystrokes per FIM trace")
    ap.add_argument("--n-decode", type=int, default=256, help="tokens for the batch-1 decode rate")
    ap.add_argument("--cpu-dry-run", action="store_true", help="check the script on CPU (debug preset, eager)")
    args = ap.parse_args()
    dev = "cpu" if args.cpu_dry_run else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("decode_speed.py needs a CUDA GPU (or --cpu-dry-run)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name() if dev == "cuda" else "cpu (dry run)"
    out = {"device": device, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "torch": torch.__version__, "presets": {}}
    bw = copy_bandwidth(dev, gib=2.0 if dev == "cuda" else 0.1)
    out["copy_bandwidth_GBps"] = bw / 1e9
    log(f"device {device}, torch {torch.__version__}; device-to-device copy bandwidth {bw / 1e9:.0f} GB/s")
    sections = set(args.sections.split(","))
    modes = [m for m in args.modes.split(",") if m]
    presets = args.presets.split(",")
    if args.cpu_dry_run:   # what the flag promises: the code path on a model a CPU can hold
        modes, presets = ["eager"], ["debug"]
    for preset in presets:
        bench_preset(preset, modes, sections, bw, out["presets"], dev, args.compile_prefill, args.max_slots,
                     args.keystrokes, args.n_decode)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    md = table(out)
    log(md)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    entry = (f"\n### decode_speed.py — {out['date']} — {device} (torch {torch.__version__})\n\n"
             f"Copy bandwidth {bw / 1e9:.0f} GB/s; bandwidth limit = copy bandwidth / (2 bytes x parameters). "
             f"Random bf16 weights; FIM = 2k-token PSM prompt, 16 new tokens, {args.keystrokes} keystrokes; "
             f"decode rate and throughput with speculation off, FIM with the engine's default speculation.\n\n{md}\n")
    from results_md import record
    record("Inference", entry, args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
