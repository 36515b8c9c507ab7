"""`codegemma train`: arguments -> TrainConfig -> train(). Several GPUs: `torchrun -m codegemma train`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

EPILOG = """examples:
  codegemma train --data shards/ --out runs/debug --preset debug --steps 200
  codegemma train --data shards/ --out runs/ft --init google-codegemma-2b --lr 2e-5 --resume
  codegemma train --sft chats.jsonl --out runs/it --init base/ --lora-rank 16
  torchrun --nproc-per-node 8 -m codegemma train --config run.toml
A TOML --config holds the same names as the flags (seq_len or seq-len); flags override it."""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="pretrain (packed shards), instruction-tune or LoRA-tune a model",
                              description="Train a Gemma model: pretraining on packed shards, instruction tuning,\n"
                                          "full or LoRA fine-tuning; on the CPU, one GPU or many (torchrun, FSDP2).\n"
                                          "A run writes checkpoints as it goes; Ctrl-C stops at the end of the step\n"
                                          "with a checkpoint, and --resume continues it.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every default is None: a flag given overrides the config file, one not given leaves it alone.
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML file with any of the options below")
    a("--data", metavar="DIR", help="packed shard directory (codegemma data prepare): next-token pretraining")
    a("--sft", metavar="FILE", help='JSON lines {"messages": [...]}: instruction tuning, loss on model turns only')
    a("--sft-val", metavar="FILE", help="held-out JSON lines for validation loss during --sft")
    a("--out", metavar="DIR", help="run directory: checkpoints/, metrics.jsonl, loss.png, final/")
    a("--preset", metavar="NAME", help="start from random weights of a preset (debug, nano, 2b, 7b), sized to "
                                       "the data: its vocabulary, and a context at least the shards' length")
    a("--init", metavar="DIR", help="start from a Hugging Face model directory (fine-tuning)")
    a("--tokenizer", metavar="DIR", help="tokenizer for --sft and the export (default: data manifest, then --init)")
    a("--allow-nonfinite", action="store_true", default=None,
      help="load an --init model whose weights hold NaN or Inf values (refused by default) with a warning")
    a("--steps", type=int, help="optimizer steps (default 1000)")
    a("--max-minutes", type=float, help="stop after this much wall time: checkpoint, validate, export "
                                         "(resume later with --resume); the schedule still spans --steps")
    a("--seq-len", type=int, help="tokens per row (packed: must match the shards; SFT default 2048)")
    a("--batch-tokens", type=int, help="global tokens per optimizer step, filled by gradient accumulation "
                                       "(default: one row per process, seq_len x micro-batch x processes)")
    a("--micro-batch", type=int, help="rows per forward pass per process (default 1)")
    a("--lr", type=float, help="peak learning rate (default 3e-4)")
    a("--warmup-steps", type=int, help="linear warmup steps (default min(100, steps/10))")
    a("--min-lr-ratio", type=float, help="cosine decays to lr x this at the last step (default 0.1)")
    a("--weight-decay", type=float, help="AdamW weight decay on matrices (default 0.1)")
    a("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1.0)")
    a("--lora-rank", type=int, help="train LoRA adapters of this rank instead of all weights")
    a("--lora-alpha", type=float, help="LoRA alpha (default 2 x rank)")
    a("--lora-targets", type=lambda text: tuple(t.strip() for t in text.split(",") if t.strip()), metavar="NAMES",
      help="comma list of projections to adapt (default q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
    a("--precision", choices=("auto", "bf16", "fp32"), help="auto (default) = bf16 autocast on CUDA, fp32 on CPU")
    a("--compile", action="store_true", default=None, help="torch.compile each decoder layer")
    a("--activation-checkpointing", metavar="MODE",
      help="recompute activations in the backward pass: none (default) | full | every-N (every N-th layer)")
    a("--no-doc-mask", dest="doc_mask", action="store_false", default=None,
      help="let attention cross packed document boundaries (positions run on)")
    a("--device", help="auto (default: cuda if available, else cpu), cpu or cuda (torchrun: each process its own GPU)")
    a("--seed", type=int, help="seed for the weights and the data order (default 0)")
    a("--log-every", type=int, help="steps between metrics lines (default 1)")
    a("--val-every", type=int, help="steps between validation losses, 0 = never (default 200)")
    a("--ckpt-every", type=int, help="steps between checkpoints, 0 = none (default 500)")
    a("--resume", action="store_true", default=None, help="continue from the newest checkpoint in --out")
    a("--no-export", dest="export", action="store_false", default=None, help="skip writing out/final")
    a("--peak-tflops", type=float, help="device peak for MFU (default from the device name)")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="plain log lines (step, loss, tokens/s; about every 10 s) instead of a progress bar; "
           "also the default when stderr is not a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from codegemma.train.config import FIELDS, build_config

    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    cfg = build_config(args.config, **flags)
    from codegemma.train.loop import train

    try:
        summary = train(cfg)
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0")) == 0:
            print(_interrupted(cfg), file=sys.stderr)
        return 130
    if summary.get("final") or summary.get("plot"):
        print(json.dumps(summary))
    return 0


def _interrupted(cfg) -> str:
    """What a Ctrl-C'd run left behind and the exact command that continues it."""
    from pathlib import Path

    from codegemma.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(Path(cfg.out) / "checkpoints")
    if found is None:
        return ("codegemma train: interrupted before the first checkpoint; nothing to resume: run the same "
                "command to start again" + ("" if cfg.ckpt_every else " (--ckpt-every 0 writes none)"))
    args = sys.argv[1:] + ([] if "--resume" in sys.argv else ["--resume"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc-per-node {world} -m codegemma" if world > 1 else "codegemma"
    step = int(found.name.removeprefix("step_"))
    return (f"codegemma train: interrupted; {found} holds step {step} of {cfg.steps}. Resume with:\n"
            f"  {launcher} {shlex.join(args)}")
