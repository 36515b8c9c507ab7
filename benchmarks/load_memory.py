"""Peak memory of loading a checkpoint: codegemma's load_model vs transformers' from_pretrained.

Writes a random bf16 Gemma of about --params parameters (default ~0.4B, 0.8 GB), then loads it in
fresh subprocesses, each reporting its peak resident memory above the interpreter's baseline. The
claim checked: after loading and reading every weight once, load_model holds ~1x the weights (meta-device module + mmap'd safetensors assigned
tensor by tensor). Prints a table and appends it to benchmarks/RESULTS.md.

    python benchmarks/load_memory.py [--dtype bfloat16|float32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
import transformers  # imported before the baseline so both loaders start equal
from codegemma.model import checkpoint

def status_kib(key):  # /proc: VmHWM is this process's peak (ru_maxrss would inherit the parent's)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

base = status_kib("VmRSS")
path, which, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
if which == "codegemma":
    model, _ = checkpoint.load_model(path, device="cpu", dtype=dtype)
else:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
with torch.no_grad():  # read every weight once: lazily mmap'd weights count when used, not before
    for p in model.parameters():
        p.sum()
peak = status_kib("VmHWM")
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak_kib": peak - base, "weights_bytes": weights}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--keep", help="write the test checkpoint here instead of a temp dir")
    args = ap.parse_args()

    import torch

    from codegemma.model.checkpoint import save_model
    from codegemma.model.config import GemmaConfig
    from codegemma.model.transformer import Gemma

    config = GemmaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=8192, num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=1, head_dim=128, torch_dtype="bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep or tmp) / "bench-model"
        with torch.device("meta"):
            model = Gemma(config)
        model = model.to(torch.bfloat16).to_empty(device="cpu").init_weights(0)
        save_model(model, config, path, dtype="bfloat16")
        del model
        rows = []
        for which in ("codegemma", "transformers"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), which, args.dtype],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((which, r["peak_kib"] * 1024 / 1e9, r["weights_bytes"] / 1e9))
    ours = rows[0][1]
    lines = ["| loader | peak RSS above baseline (GB) | weights (GB) | peak / weights | vs transformers |",
             "|---|---|---|---|---|"]
    for which, peak, weights in rows:
        lines.append(f"| {which} | {peak:.2f} | {weights:.2f} | {peak / weights:.2f}x | {peak / max(rows[1][1], 1e-9):.2f}x |")
    table = "\n".join(lines)
    print(f"{config.num_parameters() / 1e9:.2f}B params, bf16 checkpoint, loaded as {args.dtype}\n{table}")
    from results_md import record
    stamp = f"{datetime.date.today()} on {platform.machine()} CPU ({platform.node() or 'host'})"
    record("Checkpoint loading memory (benchmarks/load_memory.py)",
           f"{config.num_parameters() / 1e9:.2f}B-parameter bf16 checkpoint loaded as {args.dtype}, "
           f"{stamp}; codegemma peak = {ours:.2f} GB.\n\n{table}")


if __name__ == "__main__":
    main()
