"""`codegemma train`: arguments -> TrainConfig -> train(). Several GPUs: `torchrun -m codegemma train`."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  codegemma train --data shards/ --out runs/debug --preset debug --steps 200
  codegemma train --data shards/ --out runs/ft --init google-codegemma-2b --lr 2e-5 --resume
  codegemma train --sft chats.jsonl --out runs/it --init base/ --lora-rank 16
  torchrun --nproc-per-node 8 -m codegemma train --config run.toml
A TOML --config holds the same names as the flags (seq_len or seq-len); flags override it."""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="pretrain (packed shards), instruction-tune or LoRA-tune a model",
                              description="Train a Gemma model: pretraining on packed shards, instruction tuning, "
                                          "full or LoRA fine-tuning; on the CPU, one GPU or many (torchrun, FSDP2).",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every default is None: a flag given overrides the config file, one not given leaves it alone.
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML file with any of the options below")
    a("--data", metavar="DIR", help="packed shard directory (codegemma data prepare): next-token pretraining")
    a("--sft", metavar="FILE", help='JSON lines {"messages": [...]}: instruction tuning, loss on model turns only')
    a("--sft-val", metavar="FILE", help="held-out JSON lines for validation loss during --sft")
    a("--out", metavar="DIR", help="run directory: checkpoints/, metrics.jsonl, loss.png, final/")
    a("--preset", metavar="NAME", help="start from random weights of a preset (debug, 2b, 7b)")
    a("--init", metavar="DIR", help="start from a Hugging Face model directory (fine-tuning)")
    a("--tokenizer", metavar="DIR", help="tokenizer for --sft and the export (default: data manifest, then --init)")
    a("--allow-nonfinite", action="store_true", default=None,
      help="load an --init model whose weights hold NaN or Inf values (refused by default) with a warning")
    a("--steps", type=int, help="optimizer steps (default 1000)")
    a("--max-minutes", type=float, help="stop after this much wall time: checkpoint, validate, export "
                                         "(resume later with --resume); the schedule still spans --steps")
    a("--seq-len", type=int, help="tokens per row (packed: must match the shards; SFT default 2048)")
    a("--batch-tokens", type=int, help="global tokens per optimizer step (gradient accumulation fills it)")
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
    a("--precision", choices=("auto", "bf16", "fp32"), help="auto = bf16 autocast on CUDA, fp32 on CPU")
    a("--compile", action="store_true", default=None, help="torch.compile each decoder layer")
    a("--activation-checkpointing", metavar="MODE", help="none | full | every-N")
    a("--no-doc-mask", dest="doc_mask", action="store_false", default=None,
      help="let attention cross packed document boundaries (positions run on)")
    a("--device", choices=("auto", "cpu", "cuda"))
    a("--seed", type=int)
    a("--log-every", type=int)
    a("--val-every", type=int, help="steps between validation losses, 0 = never (default 200)")
    a("--ckpt-every", type=int, help="steps between checkpoints, 0 = none (default 500)")
    a("--resume", action="store_true", default=None, help="continue from the newest checkpoint in --out")
    a("--no-export", dest="export", action="store_false", default=None, help="skip writing out/final")
    a("--peak-tflops", type=float, help="device peak for MFU (default from the device name)")
    a("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from codegemma.train.config import FIELDS, build_config

    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    cfg = build_config(args.config, **flags)
    from codegemma.train.loop import train

    summary = train(cfg)
    if summary.get("final") or summary.get("plot"):
        print(json.dumps(summary))
    return 0
