"""Decode speed of int8 / int4 weights against bf16, the bandwidth limit and llama.cpp.

For each preset (random weights, the same for every format), measured in one run on one device:
  - kernels: one matmul per weight shape of the preset (q/k/v fused, o, gate/up fused, down, the
    tied head) at 1 row (batch-1 decode), 16 rows (a verification pass) and 2048 rows (prefill), for
    every candidate kernel: bf16 F.linear (cuBLAS), int8 via our Triton kernel, torch._weight_int8pack_mm
    and gpt-fast's compiled dequantize + F.linear, int4 via our Triton kernel and tinygemm
    (torch._weight_int4pack_mm); microseconds and GB/s of weight bytes (several copies of each
    weight are cycled so that none is served from L2). `--sweep` also times Triton launch configs.
  - decode: the Engine's batch-1 decode tokens/s for bf16, int8 and int4 (per --modes), against the
    bandwidth limit for the bytes a step actually reads (copy bandwidth / weight bytes of the
    quantized model: each weight once, the tied head included), and the FIM keystroke trace
    (2k-token PSM prompt, 16 new tokens) p50/p99 as in decode_speed.py;
  - llama.cpp (with --llama-bench PATH): the same weights exported to GGUF f16 / q8_0 / q4_0 by
    `codegemma export` and timed by `llama-bench -p 0 -n 128 -ngl 99` (its tg128 tokens/s).

Prints a table, writes JSON (--out) and records it in benchmarks/RESULTS.md under "Quantization".
On the CPU (no CUDA, or --device cpu) it runs the same code on the debug preset, eager decode.

    PYTHONPATH=. python3 benchmarks/quant_speed.py --presets 2b,7b --modes graphs,compile --out q.json
    PYTHONPATH=. python3 benchmarks/quant_speed.py --llama-bench ~/llama.cpp/build/bin/llama-bench
    PYTHONPATH=. python3 benchmarks/quant_speed.py --presets debug --device cpu   # the CPU path
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_speed import copy_bandwidth, engine_decode_rate, fim_trace, log, pct, rand_ids, tokenizer  # noqa: E402

from codegemma.infer.engine import Engine  # noqa: E402
from codegemma.infer.quantize import quantize_int4, quantize_int8, quantize_model, weight_bytes  # noqa: E402
from codegemma.model.config import get_preset  # noqa: E402
from codegemma.model.transformer import Gemma  # noqa: E402

FORMATS = ("bf16", "int8", "int4")


def build(preset: str, device: str, dtype: torch.dtype, seed: int = 0) -> Gemma:
    """Random weights N(0, 0.02) made on the device (the same for every call with the same seed);
    control-token embedding rows zeroed so greedy runs never stop early."""
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = Gemma(cfg)
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        model.embed_tokens.weight[:108] = 0.0
    return model.eval()


def model_for(preset: str, fmt: str, device: str, dtype: torch.dtype, group_size: int) -> Gemma:
    """fmt: bf16 (the unquantized dtype), int8, int4, or int8:KERNEL / int4:KERNEL to pick a CUDA
    kernel other than the default (quantize.INT8_CUDA_KERNEL / INT4_CUDA_KERNEL)."""
    import codegemma.infer.quantize as quantize

    model = build(preset, device, dtype)
    mode, _, kernel = fmt.partition(":")
    if mode != "bf16":
        name = "INT8_CUDA_KERNEL" if mode == "int8" else "INT4_CUDA_KERNEL"
        default = getattr(quantize, name)
        setattr(quantize, name, kernel or default)  # read when each module is built
        try:
            quantize_model(model, mode, group_size)
        finally:
            setattr(quantize, name, default)
    return model


# ---- kernels ------------------------------------------------------------------------------------

def time_graph(fns: list, reps: int = 20) -> float:
    """Seconds per call, cycling through fns (one per weight copy), replayed from a CUDA graph."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for f in fns:
            f()
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (reps * len(fns))


def time_cpu(fns: list, reps: int = 5) -> float:
    for f in fns:
        f()
    t0 = time.perf_counter()
    for _ in range(reps):
        for f in fns:
            f()
    return (time.perf_counter() - t0) / (reps * len(fns))


def shapes_of(cfg) -> dict[str, tuple[int, int]]:
    hd = cfg.head_dim
    return {"qkv": ((cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd, cfg.hidden_size),
            "o": (cfg.hidden_size, cfg.num_attention_heads * hd),
            "gate_up": (2 * cfg.intermediate_size, cfg.hidden_size),
            "down": (cfg.hidden_size, cfg.intermediate_size),
            "head": (cfg.vocab_size, cfg.hidden_size)}


def kernel_candidates(w: torch.Tensor, group_size: int) -> dict:
    """name -> (function of x, weight bytes read); "raw" -> {bits: (weight, scales)} for the sweep."""
    n, k = w.shape
    out: dict = {"raw": {}}
    dt = w.dtype
    out[str(dt).replace("torch.", "")] = (lambda x, w=w: F.linear(x, w), n * k * w.element_size())
    q8, s8 = quantize_int8(w)
    b8 = q8.numel() + s8.numel() * s8.element_size()
    if w.is_cuda:
        from codegemma.infer.quant_triton import wq_matmul

        out["int8 triton"] = (lambda x: wq_matmul(x, q8, s8, n, bits=8), b8)
        out["raw"][8] = (q8, s8)
        out["int8 _weight_int8pack_mm"] = (lambda x: torch._weight_int8pack_mm(x, q8, s8), b8)
        deq = torch.compile(lambda x, q, s: F.linear(x, q.to(x.dtype)) * s, dynamic=False)
        out["int8 compiled dequant"] = (lambda x: deq(x, q8, s8), b8)
        q4, sz = quantize_int4(w, group_size, dt)
        packed = (q4[:, ::2] | q4[:, 1::2] << 4).to(torch.uint8)
        b4 = packed.numel() + sz.numel() * sz.element_size()
        out[f"int4 triton g{group_size}"] = (
            lambda x: wq_matmul(x, packed, sz, n, bits=4, group=group_size), b4)
        out["raw"][4] = (packed, sz)
        tiles = next((t for t in (8, 4, 2) if k % (t * 16) == 0), None)
        if tiles is not None and n % 8 == 0:
            tq = torch._convert_weight_to_int4pack((q4[:, ::2] << 4 | q4[:, 1::2]).to(torch.uint8), tiles)
            tsz = sz.to(torch.bfloat16)
            out[f"int4 tinygemm g{group_size}"] = (
                lambda x: torch._weight_int4pack_mm(x.to(torch.bfloat16), tq, group_size, tsz), b4)
    else:
        out["int8 _weight_int8pack_mm"] = (lambda x: torch._weight_int8pack_mm(x, q8, s8), b8)
        if k % group_size == 0 and n % 16 == 0:
            q4, sz = quantize_int4(w, group_size, dt)
            packed = torch._convert_weight_to_int4pack_for_cpu(q4, 8)
            out[f"int4 _weight_int4pack_mm_for_cpu g{group_size}"] = (
                lambda x: torch._weight_int4pack_mm_for_cpu(x, packed, group_size, sz),
                packed.numel() + sz.numel() * sz.element_size())
    return out


def bench_kernels(cfg, device: str, dtype: torch.dtype, group_size: int, rows: list[int], sweep: tuple,
                  only: str | None = None) -> list[dict]:
    res = []
    gen = torch.Generator(device=device).manual_seed(0)
    for name, (n, k) in shapes_of(cfg).items():
        # enough copies that the set of weights is far larger than the L2 cache
        copies = 1 if device == "cpu" else max(1, min(16, math.ceil(512e6 / (n * k * 2))))
        cands = [kernel_candidates(torch.randn(n, k, generator=gen, device=device, dtype=dtype) * 0.02, group_size)
                 for _ in range(copies)]
        for m in rows:
            if m > 16 and name == "head":
                continue  # prefill computes the head for one row only
            x = torch.randn(m, k, generator=gen, device=device, dtype=dtype)
            for kname in [c for c in cands[0] if c != "raw" and (not only or re.search(only, c))]:
                if kname == "int8 compiled dequant" and m > 1:
                    continue  # gpt-fast's decode path; each new row count would recompile
                try:
                    fns = [lambda c=c: c[kname][0](x) for c in cands]
                    sec = time_graph(fns) if device == "cuda" else time_cpu(fns)
                    nbytes = cands[0][kname][1]
                    res.append(dict(shape=name, n=n, k=k, m=m, kernel=kname, us=sec * 1e6,
                                    GBps=nbytes / sec / 1e9))
                    log(f"  {name:8s} [{n}x{k}] m={m:<5d} {kname:34s} {sec * 1e6:9.1f} us {nbytes / sec / 1e9:8.0f} GB/s")
                except Exception as exc:  # one failing kernel must not lose the others
                    res.append(dict(shape=name, n=n, k=k, m=m, kernel=kname, error=repr(exc)[:300]))
                    log(f"  {name} m={m} {kname}: error {exc!r}"[:300])
            if sweep and device == "cuda" and m == 1:
                res += sweep_configs(cands, name, n, k, m, x, group_size, sweep)
        del cands
        if device == "cuda":
            torch.cuda.empty_cache()
    return res


def sweep_configs(cands, name, n, k, m, x, group_size, sweep_bits=(8, 4)) -> list[dict]:
    """Time our Triton GEMV over launch configs (to choose quant_triton.pick_config's rules); each
    config's output is checked against the default config's."""
    from codegemma.infer.quant_triton import pick_config, wq_matmul

    out = []
    for bits in sweep_bits:
        base = pick_config(m, n, k, bits, group_size)
        want = wq_matmul(x, *cands[0]["raw"][bits], n, bits=bits, group=group_size).float()
        best = None
        for bn in (8, 16, 32, 64):
            for bk in ((256, 512) if bits == 8 else (128,)):
                for split in (1, 2, 4, 8):
                    for stages in (2, 4):
                        if k % (bk * split) or (bits == 4 and group_size % bk):
                            continue
                        cfg = dict(base, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, STAGES=stages)
                        try:
                            got = wq_matmul(x, *cands[0]["raw"][bits], n, bits=bits, group=group_size, config=cfg)
                            if (got.float() - want).abs().max() > 0.02 * want.abs().max():
                                log(f"  sweep {cfg}: WRONG RESULT")
                                continue
                            fns = [lambda c=c, cfg=cfg: wq_matmul(x, *c["raw"][bits], n, bits=bits, group=group_size,
                                                                  config=cfg) for c in cands]
                            us = time_graph(fns) * 1e6
                        except Exception as exc:
                            log(f"  sweep {cfg}: {exc!r}"[:200])
                            continue
                        if best is None or us < best[0]:
                            best = (us, cfg)
        if best:
            log(f"  sweep {name} m={m} int{bits}: best {best[0]:.1f} us {best[1]}; pick_config gives {base}")
            out.append(dict(shape=name, n=n, k=k, m=m, kernel=f"int{bits} triton best config", us=best[0],
                            config=best[1]))
    return out


# ---- engine decode -------------------------------------------------------------------------------

def bench_decode(preset: str, fmt: str, modes: list[str], device: str, dtype, bw: float, group_size: int,
                 sections: set[str], keystrokes: int, n_dec: int) -> dict:
    res: dict = {}
    t0 = time.perf_counter()
    model = model_for(preset, fmt, device, dtype, group_size)
    cfg = model.config
    nbytes = weight_bytes(model)
    limit = bw / nbytes
    res.update(weight_bytes=nbytes, bandwidth_limit_tok_s=limit, build_s=time.perf_counter() - t0)
    log(f"[{preset}/{fmt}] weights {nbytes / 1e9:.2f} GB read per token; limit {limit:.0f} tok/s "
        f"[{time.perf_counter() - t0:.0f}s]")
    tok = tokenizer()
    gen = torch.Generator().manual_seed(0)
    prompt = rand_ids(32, gen, cfg.vocab_size)
    for mode in modes:
        m = res.setdefault(mode, {})
        try:
            with Engine(model, tok, max_slots=2, max_seq_len=2304, decode=mode) as engine:
                spec = engine.speculate
                engine.speculate = 0
                r, step_ms = engine_decode_rate(engine, prompt, n_dec)
                m.update(decode_tok_s=r, frac_of_limit=r / limit, step_only_ms=step_ms)
                log(f"[{preset}/{fmt}/{mode}] batch-1 decode {r:.1f} tok/s ({r / limit:.1%} of limit) "
                    f"[{time.perf_counter() - t0:.0f}s]")
                if "fim" in sections:
                    engine.speculate = spec
                    cold = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "cold")
                    warm = fim_trace(engine, gen, cfg.vocab_size, keystrokes, "warm")
                    m.update(fim_cold_ms={"p50": pct(cold, 50), "p99": pct(cold, 99)},
                             fim_warm_ms={"p50": pct(warm, 50), "p99": pct(warm, 99)})
                    log(f"[{preset}/{fmt}/{mode}] FIM p50 cold {pct(cold, 50):.1f} ms, warm {pct(warm, 50):.1f} ms")
        except Exception as exc:
            m["error"] = repr(exc)[:300]
            traceback.print_exc()
    if device == "cuda":
        res["max_memory_allocated_GB"] = torch.cuda.max_memory_allocated() / 1e9
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return res


# ---- llama.cpp -----------------------------------------------------------------------------------

def bench_llama(preset: str, llama_bench: str, device: str, workdir: Path, n_gen: int = 128) -> dict:
    """Save the bf16 random weights (as build() makes them), export f16 / q8_0 / q4_0 GGUFs, run llama-bench."""
    from codegemma.model.checkpoint import save_model
    from codegemma.model.gguf_export import export_gguf
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer

    out: dict = {}
    model_dir = workdir / f"{preset}-model"
    model = build(preset, device, torch.bfloat16)
    tok_dir = workdir / "tok"
    tok_dir.mkdir(exist_ok=True)
    save_tokenizer_files(train_bpe_tokenizer(["def add(a, b):\n    return a + b\n" * 8], 512), tok_dir)
    save_model(model, model.config, model_dir, dtype="bfloat16", tokenizer_dir=tok_dir)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    for gtype in ("f16", "q8_0", "q4_0"):
        gguf_path = workdir / f"{preset}-{gtype}.gguf"
        t0 = time.perf_counter()
        export_gguf(model_dir, gguf_path, dtype=gtype)
        log(f"[{preset}] exported {gtype} in {time.perf_counter() - t0:.0f}s ({gguf_path.stat().st_size / 1e9:.2f} GB)")
        cmd = [llama_bench, "-m", str(gguf_path), "-p", "0", "-n", str(n_gen), "-o", "json"]
        if device == "cuda":
            cmd += ["-ngl", "99"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[gtype] = {"error": proc.stderr[-500:]}
            log(f"[{preset}] llama-bench {gtype} failed: {proc.stderr[-300:]}")
        else:
            rows = json.loads(proc.stdout)
            tg = next(r for r in rows if r.get("n_gen", 0) > 0)
            out[gtype] = {"tok_s": tg["avg_ts"], "stddev": tg.get("stddev_ts"),
                          "file_GB": gguf_path.stat().st_size / 1e9}
            log(f"[{preset}] llama-bench {gtype}: tg{n_gen} {tg['avg_ts']:.1f} tok/s")
        gguf_path.unlink()
    return out


# ---- memory: load and serve on a budget ------------------------------------------------------------

MEMORY_CHILD = r"""
import json, sys, time, torch
import codegemma
from codegemma.infer.engine import SamplingParams
path, quant, budget, ctx, n_prompt = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.cuda.set_per_process_memory_fraction(budget / torch.cuda.get_device_properties(0).total_memory)
t0 = time.perf_counter()
cg = codegemma.load(path, device="cuda", quantize=quant, max_slots=1, max_seq_len=ctx, decode="graphs", warmup=True)
load_s, after_load = time.perf_counter() - t0, torch.cuda.max_memory_allocated()
ids = [2] + torch.randint(108, cg.config.vocab_size, (n_prompt - 1,), generator=torch.Generator().manual_seed(0)).tolist()
c = cg.engine.submit(ids, SamplingParams(max_new_tokens=64)).result()
print(json.dumps({"load_s": load_s, "max_allocated_after_load_GB": after_load / 1e9,
                  "max_allocated_after_request_GB": torch.cuda.max_memory_allocated() / 1e9,
                  "kv_cache_GB": cg.engine.cache.nbytes() / 1e9, "prompt_tokens": c.prompt_tokens,
                  "completion_tokens": c.completion_tokens, "prefill_ms": c.prompt_ms,
                  "decode_tok_s": (c.completion_tokens - 1) / (c.decode_ms / 1000)}))
"""


def bench_memory(preset: str, quant: str, budget_gb: float, ctx: int, n_prompt: int, workdir: Path) -> dict:
    """Save random bf16 weights, then load them with `codegemma.load(quantize=...)` in a fresh
    process capped at `budget_gb` of GPU memory (torch.cuda.set_per_process_memory_fraction) and
    serve one request of `n_prompt` tokens in a 1-slot, `ctx`-token KV cache."""
    from codegemma.model.checkpoint import save_model
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer

    model_dir = workdir / f"{preset}-model"
    if not model_dir.exists():
        model = build(preset, "cuda", torch.bfloat16)
        tok_dir = workdir / "tok"
        tok_dir.mkdir(exist_ok=True)
        save_tokenizer_files(train_bpe_tokenizer(["def add(a, b):\n    return a + b\n" * 8], 512), tok_dir)
        t0 = time.perf_counter()
        save_model(model, model.config, model_dir, dtype="bfloat16", tokenizer_dir=tok_dir)
        log(f"[{preset}] saved a random bf16 checkpoint in {time.perf_counter() - t0:.0f}s")
        del model
        torch.cuda.empty_cache()
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(model_dir), quant, str(budget_gb * 1e9),
                           str(ctx), str(n_prompt)], capture_output=True, text=True, cwd=str(ROOT))
    if proc.returncode != 0:
        log(f"[{preset}/{quant}] memory run failed: {proc.stderr[-800:]}")
        return {"error": proc.stderr[-800:], "budget_GB": budget_gb}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r.update(budget_GB=budget_gb, slots=1, context=ctx)
    log(f"[{preset}/{quant}] on a {budget_gb:g} GB budget: max allocated {r['max_allocated_after_load_GB']:.2f} GB "
        f"after loading ({r['load_s']:.0f}s), {r['max_allocated_after_request_GB']:.2f} GB after a "
        f"{r['prompt_tokens']}-token prompt + {r['completion_tokens']} tokens (KV cache {r['kv_cache_GB']:.2f} GB: "
        f"1 slot + the scratch row, {ctx} tokens); decode {r['decode_tok_s']:.0f} tok/s")
    return r


# ---- report --------------------------------------------------------------------------------------

def table(out: dict) -> str:
    nan = float("nan")
    llama_of = {"bf16": "f16", "int8": "q8_0", "int4": "q4_0"}
    lines = ["| preset | weights | GB read/token | bandwidth limit tok/s | decode mode | batch-1 tok/s | of limit "
             "| vs bf16 (same mode) | FIM cold/warm p50 ms | llama.cpp tok/s (type) | vs llama.cpp |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|"]
    for preset, res in out["presets"].items():
        for fmt, r in res.items():
            if fmt.partition(":")[0] not in FORMATS or not r:
                continue
            for mode, m in r.items():
                if not isinstance(m, dict) or mode in ("llama",):
                    continue
                if "error" in m:
                    lines.append(f"| {preset} | {fmt} | | | {mode} | error: {m['error'][:80]} | | | | | |")
                    continue
                base = res.get("bf16", {}).get(mode, {}).get("decode_tok_s", nan)
                lm = res.get("llama", {}).get(llama_of[fmt.partition(":")[0]], {})
                lt = lm.get("tok_s", nan)
                fc, fw = m.get("fim_cold_ms", {}).get("p50", nan), m.get("fim_warm_ms", {}).get("p50", nan)
                lines.append(
                    f"| {preset} | {fmt} | {r['weight_bytes'] / 1e9:.2f} | {r['bandwidth_limit_tok_s']:.0f} | {mode} | "
                    f"{m['decode_tok_s']:.1f} | {m['frac_of_limit']:.1%} | {m['decode_tok_s'] / base:.2f}x | "
                    f"{fc:.1f} / {fw:.1f} | {lt:.1f} ({llama_of[fmt.partition(':')[0]]}) | "
                    f"{m['decode_tok_s'] / lt:.2f}x |")
    return "\n".join(lines)


def kernel_md(rows: list[dict]) -> str:
    lines = ["| shape | rows | kernel | us | GB/s of weight bytes |", "|---|---:|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} [{r['n']}x{r['k']}] | {r['m']} | {r['kernel']} | error | |")
        elif "config" not in r:
            lines.append(f"| {r['shape']} [{r['n']}x{r['k']}] | {r['m']} | {r['kernel']} | {r['us']:.1f} | {r['GBps']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="2b,7b")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--modes", default="graphs", help="decode modes on GPU: graphs, compile (eager on CPU)")
    ap.add_argument("--sections", default="kernels,decode,fim", help="kernels, decode, fim")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--kernel-rows", default="1,16,2048", help="matmul rows timed in the kernels section")
    ap.add_argument("--sweep", default="", help="kernels section: also time Triton launch configs for these "
                    "bit widths, e.g. 8,4")
    ap.add_argument("--kernel-filter", default=None, metavar="REGEX", help="kernels section: only these kernels")
    ap.add_argument("--keystrokes", type=int, default=10)
    ap.add_argument("--n-decode", type=int, default=128)
    ap.add_argument("--llama-bench", default=None, metavar="PATH", help="llama-bench binary: compare with llama.cpp")
    ap.add_argument("--memory", default=None, metavar="PRESET:MODE",
                    help="also load PRESET quantized to MODE from disk on a GPU memory budget, e.g. 7b:int4")
    ap.add_argument("--budget-gb", type=float, default=12.0, help="GPU memory budget for --memory (default 12)")
    ap.add_argument("--memory-context", type=int, default=4096, help="KV cache length for --memory")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--out", default=None, help="JSON output file")
    ap.add_argument("--results-md", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--no-record", action="store_true", help="do not add the table to RESULTS.md")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    presets, modes = args.presets.split(","), [m for m in args.modes.split(",") if m]
    if device == "cpu":  # what a CPU can hold and run
        presets, modes = [p if p in ("debug", "nano") else "debug" for p in presets][:1], ["eager"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sections = set(args.sections.split(","))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out = {"device": name, "torch": torch.__version__, "group_size": args.group_size, "presets": {},
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    bw = copy_bandwidth(device, gib=2.0 if device == "cuda" else 0.1)
    out["copy_bandwidth_GBps"] = bw / 1e9
    log(f"device {name}, torch {torch.__version__}; copy bandwidth {bw / 1e9:.0f} GB/s")

    def save():
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2, default=str))

    for preset in presets:
        res = out["presets"].setdefault(preset, {})
        if "kernels" in sections:
            log(f"[{preset}] kernels ({dtype}, int4 group {args.group_size})")
            rows = [int(r) for r in args.kernel_rows.split(",")]
            res["kernels"] = bench_kernels(get_preset(preset), device, dtype, args.group_size, rows,
                                           tuple(int(b) for b in args.sweep.split(",") if b), args.kernel_filter)
            save()
        if "decode" in sections:
            for fmt in args.formats.split(","):
                res[fmt] = bench_decode(preset, fmt, modes, device, dtype, bw, args.group_size, sections,
                                        args.keystrokes, args.n_decode)
                save()
        if args.llama_bench:
            with tempfile.TemporaryDirectory() as tmp:
                res["llama"] = bench_llama(preset, args.llama_bench, device, Path(tmp))
            save()
    if args.memory and device == "cuda":
        preset, _, quant = args.memory.partition(":")
        with tempfile.TemporaryDirectory() as tmp:
            out["memory"] = bench_memory(preset, quant or "int4", args.budget_gb, args.memory_context,
                                         args.memory_context - 1024, Path(tmp))
        save()
    md = table(out)
    log(md)
    kmd = "\n\n".join(f"Kernels, {p}:\n\n{kernel_md(r['kernels'])}" for p, r in out["presets"].items() if r.get("kernels"))
    if kmd:
        log(kmd)
    save()
    if not args.no_record:
        from results_md import record

        entry = (f"\n### quant_speed.py — {out['date']} — {name} (torch {torch.__version__})\n\n"
                 f"Copy bandwidth {bw / 1e9:.0f} GB/s; limit = copy bandwidth / weight bytes read per token "
                 f"(each weight once, tied head included; int4 group {args.group_size}, head int8). Random "
                 f"weights N(0, 0.02); decode with speculation off; FIM = 2k-token PSM prompt, 16 new tokens, "
                 f"{args.keystrokes} keystrokes.\n\n{md}\n" + (f"\n{kmd}\n" if kmd else "") +
                 (f"\nMemory: `{json.dumps(out['memory'])}`\n" if out.get("memory") else ""))
        record("Quantization", entry, args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
