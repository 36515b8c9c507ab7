"""Next-token agreement of int8 / int4 weights with the unquantized model over real code.

For each preset: one model (random weights N(0, 0.02) for 2b / 7b, the trained weights for nano),
run over the same prompt (this repository's codegemma/infer/engine.py, tokenized with the built-in
model's tokenizer, whose ids are valid in every preset's vocabulary) unquantized and quantized.
Per quantization: mean KL(reference || quantized) of the next-token distributions over every
position, top-1 agreement, and the reference's mean entropy (random weights give nearly flat
distributions, where top-1 ties flip easily: read the KL first there).

    PYTHONPATH=. python3 benchmarks/quant_quality.py --presets 2b --device cpu     # 2b on a CPU
    PYTHONPATH=. python3 benchmarks/quant_quality.py --presets 7b                   # on a GPU
    PYTHONPATH=. python3 benchmarks/quant_quality.py --presets nano --device cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from codegemma.infer.quantize import quantize_model, weight_bytes  # noqa: E402

VARIANTS = (("int8", 128, True), ("int4", 128, True), ("int4", 32, True), ("int4", 128, False))


def prompt_ids(n: int) -> list[int]:
    from codegemma.models import BUILTIN_DIR
    from codegemma.tokenizer import Tokenizer

    tok = Tokenizer.load(BUILTIN_DIR)  # the tokenizer only: the weights need not be installed
    text = (ROOT / "codegemma" / "infer" / "engine.py").read_text()
    return tok.encode(text, add_bos=True)[:n]


def make_model(preset: str, device: str, dtype: torch.dtype):
    if preset == "nano":
        from codegemma.model.checkpoint import load_model
        from codegemma.models import resolve_model

        return load_model(resolve_model("nano"), device=device, dtype=dtype)[0]
    from quant_speed import build

    return build(preset, device, dtype)


@torch.no_grad()
def log_probs(model, ids: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[T, V] fp32 log-probabilities, the output head run over `chunk` positions at a time."""
    hidden = model.hidden_states(ids)[0]
    return torch.cat([model.logits(hidden[i:i + chunk]).float().log_softmax(-1) for i in range(0, len(hidden), chunk)])


def measure(preset: str, device: str, dtype: torch.dtype, n_tokens: int) -> dict:
    ids = torch.tensor([prompt_ids(n_tokens)], device=device)
    model = make_model(preset, device, dtype)
    ref = log_probs(model, ids)
    res = {"tokens": ids.shape[1], "reference": str(dtype).replace("torch.", ""),
           "reference_entropy": float(-(ref.exp() * ref).sum(-1).mean()), "reference_bytes": weight_bytes(model)}
    del model
    for mode, group, head in VARIANTS:
        model = quantize_model(make_model(preset, device, dtype), mode, group, head=head)
        got = log_probs(model, ids)
        name = f"{mode}" + (f" g{group}" if mode == "int4" else "") + ("" if head else ", head unquantized")
        res[name] = {"kl": float(F.kl_div(got, ref, log_target=True, reduction="none").sum(-1).mean()),
                     "top1": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
                     "bytes": weight_bytes(model)}
        print(f"[{preset}] {name}: KL {res[name]['kl']:.5f}, top-1 agreement {res[name]['top1']:.1%}, "
              f"{res[name]['bytes'] / 1e9:.2f} GB", flush=True)
        del model, got
        if device == "cuda":
            torch.cuda.empty_cache()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="2b,7b")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="bfloat16", help="the reference dtype (default bfloat16)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out = {"device": name, "torch": torch.__version__, "presets": {},
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    for preset in args.presets.split(","):
        out["presets"][preset] = measure(preset, device, dtype, args.tokens)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2))
    lines = ["| preset | weights | KL(ref ‖ quantized), mean | top-1 agreement | weight GB | reference entropy (nats) |",
             "|---|---|---:|---:|---:|---:|"]
    for preset, r in out["presets"].items():
        for key, v in r.items():
            if isinstance(v, dict):
                lines.append(f"| {preset} | {key} | {v['kl']:.5f} | {v['top1']:.1%} | {v['bytes'] / 1e9:.3f} | "
                             f"{r['reference_entropy']:.2f} |")
    md = "\n".join(lines)
    print(md)
    if not args.no_record:
        from results_md import record

        record("Quantization quality", f"\n### quant_quality.py — {out['date']} — {name} (torch {torch.__version__})\n\n"
               f"Reference: the unquantized model in {args.dtype}; prompt: the first {args.tokens} tokens of "
               f"codegemma/infer/engine.py (built-in tokenizer). Random weights N(0, 0.02) for 2b/7b.\n\n{md}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
