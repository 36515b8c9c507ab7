"""Training throughput and MFU of codegemma's step against transformers' GemmaForCausalLM.

Both do the same optimizer step in the same run: same config (the 2b preset by default), random
weights, fp32 master weights with bf16 autocast, the same batch of `accum` x [micro_batch, seq_len]
tokens, fused AdamW, gradient clipping at 1.0. codegemma uses its training path (per-layer
torch.compile, chunked fused output-head cross-entropy, SDPA); transformers runs its own forward
(SDPA attention, full logits, its loss). Each side runs in its own subprocess (a clean GPU; an
out-of-memory is contained) and, if it does not fit, is retried with activation checkpointing.
The bf16 matmul peak (8192^3) is measured on the same device.

Usage (GPU machine):  PYTHONPATH=. python3 benchmarks/train_mfu.py --out-dir $OUT
CPU smoke test:       python benchmarks/train_mfu.py --preset debug --seq-len 256 --device cpu --no-compile
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegemma.model.config import get_preset  # noqa: E402
from codegemma.train.metrics import flops_per_token, peak_tflops  # noqa: E402

AC_LADDER = ("none", "every-2", "full")


def matmul_peak(device: torch.device) -> float | None:
    """Measured dense bf16 matmul TFLOP/s (8192^3), the ceiling an MFU can be compared with."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    n, t = 30, time.perf_counter()
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * n / (time.perf_counter() - t) / 1e12


def _batches(cfg, args, device):
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.accum):
        tokens = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len), generator=gen)
        labels = torch.roll(tokens, -1, 1)
        labels[:, -1] = -100
        out.append((tokens.to(device), labels.to(device)))
    return out


def _documents(args, seed: int = 0) -> list[list[int]]:
    """Per row, document lengths ~ exponential(mean doc_len) that fill seq_len (a packed row)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(args.accum * args.micro_batch):
        lengths, left = [], args.seq_len
        while left > 0:
            n = max(16, int(torch.empty(1).exponential_(1.0 / args.doc_len, generator=gen)))
            lengths.append(min(n, left))
            left -= lengths[-1]
        rows.append(lengths)
    return rows


def _packed_batches(cfg, args, device):
    """Like `_batches`, through the loader's make_batch: restarted positions, no cross-document targets."""
    import numpy as np

    from codegemma.train.data import Row, make_batch

    gen = torch.Generator().manual_seed(0)
    docs = _documents(args)
    out = []
    for i in range(args.accum):
        rows = []
        for lengths in docs[i * args.micro_batch:(i + 1) * args.micro_batch]:
            seg = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
            rows.append(Row(torch.randint(0, cfg.vocab_size, (args.seq_len,), generator=gen).numpy(), seg))
        out.append({k: v.to(device) for k, v in make_batch(rows, doc_mask=True).items()})
    return out


def _ours(cfg, args, device, ac: str, packed: str | None = None):
    from codegemma.model.transformer import Gemma
    from codegemma.train.parallel import apply_activation_checkpointing, apply_compile
    from codegemma.train.step import CausalLMLoss, autocast, forward_backward, mask_kind, optimizer_step

    with torch.device(device):
        model = Gemma(cfg)
    with torch.no_grad():  # random weights, drawn on the device (the CPU init of 2.5B is slow)
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    module = CausalLMLoss(model.float().train(), loss_chunk=args.loss_chunk, compile_loss=args.compile)
    apply_activation_checkpointing(model, ac)
    if args.compile:
        apply_compile(model)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    if packed:  # the loop's own micro-batch path, with document masks
        batches = _packed_batches(cfg, args, device)
        kind = packed if packed != "auto" else mask_kind(True, device, args.compile)
        n_targets = sum(int((b["labels"] != -100).sum()) for b in batches)

        def step():
            loss = forward_backward(module, batches, 1.0 / n_targets, device, torch.bfloat16, kind)
            optimizer_step(params, opt, 1.0)
            return loss
        return step
    batches = _batches(cfg, args, device)
    n_targets = sum(int((y != -100).sum()) for _, y in batches)

    def step():
        total = torch.zeros((), device=device)
        for x, y in batches:
            with autocast(device, torch.bfloat16):
                loss = module(x, y, scale=1.0 / n_targets)
            loss.backward()
            total += loss.detach()
        optimizer_step(params, opt, 1.0)
        return total
    return step


def _hf(cfg, args, device, ac: str):
    import transformers

    kw = {k: v for k, v in cfg.to_hf_dict().items()
          if k not in ("architectures", "model_type", "torch_dtype", "rope_theta")}
    hf_cfg = transformers.GemmaConfig(rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, **kw)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.GemmaForCausalLM(hf_cfg)
    model = model.float().train()
    if ac != "none":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batches = _batches(cfg, args, device)

    def step():
        total = torch.zeros((), device=device)
        for x, y in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                # HF shifts labels itself: pass the inputs as labels (mean over the micro-batch).
                loss = model(input_ids=x, labels=x).loss / len(batches)
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total
    return step


def measure(side: str, args) -> dict:
    """Run in a child process: build, warm up (compile), time `steps` optimizer steps."""
    device = torch.device(args.device)
    cfg = get_preset(args.preset)
    if args.layers:
        cfg = cfg.replace(num_hidden_layers=args.layers)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if side == "transformers":
        step = _hf(cfg, args, device, args.ac)
    else:
        packed = {"codegemma-packed": "auto", "codegemma-packed-sdpa": "sdpa"}.get(side)
        step = _ours(cfg, args, device, args.ac, packed=packed)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loss = float(step())
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = step()
    loss = float(last)
    dt = (time.perf_counter() - t0) / args.steps
    tokens = args.accum * args.micro_batch * args.seq_len
    tps = tokens / dt
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(name)
    flops_tok = flops_per_token(cfg, args.seq_len)
    if side.startswith("codegemma-packed"):  # attention only within documents: count the work it needs
        full = 6.0 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * args.seq_len
        docs = _documents(args)
        squares = sum(n * n for row in docs for n in row) / (len(docs) * args.seq_len)
        flops_tok = flops_tok - full + full * squares / args.seq_len
    achieved = tps * flops_tok / 1e12
    return {"side": side, "ac": args.ac, "step_s": dt, "tokens_per_s": tps, "tflops": achieved,
            "mfu": achieved / peak if peak else None, "loss": loss, "warmup_s": warm_s, "device": name,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "params": cfg.num_parameters(), "tokens_per_step": tokens, "seq_len": args.seq_len}


def run_side(side: str, args, argv: list[str]) -> dict:
    """Try the activation-checkpointing ladder in fresh processes until one fits in memory."""
    errors = []
    for ac in ([args.ac] if args.ac else AC_LADDER):
        cmd = [sys.executable, __file__, *argv, "--child", side, "--ac", ac]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode == 0 and lines:
            return json.loads(lines[-1])
        tail = proc.stderr.strip().splitlines()[-3:]
        errors.append(f"ac={ac}: " + " | ".join(tail))
        print(f"[{side}] ac={ac} failed: {' | '.join(tail)}", file=sys.stderr, flush=True)
        if "out of memory" not in proc.stderr.lower() and "OutOfMemory" not in proc.stderr:
            break
    return {"side": side, "error": errors}


def make_shards(directory: str, args) -> None:
    """Random-token packed shards (documents of mean --doc-len) for timing the `codegemma train` CLI."""
    import numpy as np

    from codegemma.data.shards import FORMAT_NAME, ShardWriter, atomic_write_json

    cfg = get_preset(args.preset)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    writer = ShardWriter(out, "train", seq_len=args.seq_len, pad_id=0, sequences_per_shard=64)
    for _ in range(args.rows * args.seq_len // args.doc_len):
        n = max(16, int(rng.exponential(args.doc_len)))
        writer.add_document(rng.integers(3, cfg.vocab_size, n, dtype=np.uint32))
    atomic_write_json(out / "manifest.json", {"format": FORMAT_NAME, "seq_len": args.seq_len, "pad_id": 0,
                                              "splits": {"train": {"shards": writer.close()}}})


def report(results: list[dict], args, peak_measured: float | None) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    device = next((r["device"] for r in results if "device" in r), args.device)
    head = (f"\n### train_mfu: {args.preset} preset, seq {args.seq_len}, {args.accum} x {args.micro_batch} rows/step "
            f"({device}, {date})\n\n")
    head += f"Measured bf16 matmul peak (8192^3): {peak_measured:.0f} TFLOP/s\n\n" if peak_measured else ""
    rows = ["| implementation | act. ckpt | step (s) | tokens/s | model TFLOP/s | MFU (datasheet) | MFU (measured peak) | peak mem (GiB) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['side']} | failed: {'; '.join(r['error'])[:200]} | | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
        mfu_m = f"{100 * r['tflops'] / peak_measured:.1f}%" if peak_measured else "n/a"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] else "n/a"
        rows.append(f"| {r['side']} | {r['ac']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['tflops']:.0f} "
                    f"| {mfu} | {mfu_m} | {mem} |")
    ok = {r["side"]: r for r in results if "error" not in r}
    tail = ""
    if "codegemma" in ok and "transformers" in ok:
        ratio = ok["codegemma"]["tokens_per_s"] / ok["transformers"]["tokens_per_s"]
        tail = f"\ncodegemma / transformers tokens/s: **{ratio:.2f}x**\n"
    return head + "\n".join(rows) + "\n" + tail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="2b")
    p.add_argument("--layers", type=int, default=0, help="override the layer count (smoke tests)")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--accum", type=int, default=4, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--loss-chunk", type=int, default=2048)
    p.add_argument("--doc-len", type=int, default=2048, help="mean document length of codegemma-packed rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--ac", default=None, help="activation checkpointing (default: the least that fits)")
    p.add_argument("--sides", default="codegemma,transformers",
                   help="comma list of codegemma, transformers, codegemma-packed (document-masked rows: "
                        "FlexAttention on CUDA), codegemma-packed-sdpa (the same with a bool mask)")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out-dir", default=None, help="write train_mfu.json and the markdown section here")
    p.add_argument("--results-md", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--make-shards", metavar="DIR", help="only write random packed shards there and exit")
    p.add_argument("--rows", type=int, default=64, help="rows for --make-shards")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-timeout", type=int, default=400, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)), flush=True)
        return 0
    if args.make_shards:
        make_shards(args.make_shards, args)
        return 0

    argv = [a for a in sys.argv[1:]]
    peak = matmul_peak(torch.device(args.device))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    results = [run_side(side, args, argv) for side in args.sides.split(",")]
    for r in results:
        print(json.dumps(r), flush=True)
    section = report(results, args, peak)
    print(section)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_mfu.json").write_text(json.dumps({"results": results, "matmul_peak_tflops": peak,
                                                         "args": vars(args)}, indent=2))
        (out / "train_mfu.md").write_text(section)
    md = Path(args.results_md)
    if md.parent.is_dir() and os.access(md.parent, os.W_OK):
        from results_md import record
        record("Training", section, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
