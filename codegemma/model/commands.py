"""Model subcommands: `init` (random model directory) and `export` (GGUF for llama.cpp / Ollama)."""

from __future__ import annotations

import argparse

from codegemma.fim.format import MODES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init", help="write a randomly initialised model directory (Hugging Face format) with a small tokenizer",
        description="Write a random Gemma model with a small byte-fallback BPE tokenizer (Gemma's special-token "
                    "ids) to DIR; transformers and codegemma both load it. The same --seed gives a "
                    "byte-identical directory. The 2b/7b presets allocate billions of parameters.")
    p.add_argument("--preset", default="debug", metavar="NAME",
                   help="model shape: debug (tiny, for tests; the default), nano (codegemma-nano's shape, "
                        "18.5M parameters), 2b or 7b (CodeGemma's: billions of parameters)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (must be new or empty, unless --force)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    p.set_defaults(func=_run_init)

    e = subparsers.add_parser(
        "export", help="export a model directory to GGUF (llama.cpp, Ollama) with an Ollama Modelfile",
        description="Write a GGUF file with Gemma's metadata, tokenizer and FIM token ids, and an Ollama "
                    "Modelfile next to it named after it (out/cg.gguf -> out/cg.Modelfile), so several "
                    "exports share a folder. Needs `pip install gguf`.")
    e.add_argument("--model", required=True, metavar="DIR",
                   help="model directory (Hugging Face format), or nano for the built-in codegemma-nano")
    e.add_argument("--gguf", required=True, metavar="FILE",
                   help="output .gguf file (refused if it or its Modelfile exists, unless --force)")
    e.add_argument("--dtype", choices=("f32", "f16", "bf16", "q8_0", "q4_0"), default="f16",
                   help="weight type (default f16; norms stay f32; q4_0 keeps the tied token_embd/output head q8_0)")
    e.add_argument("--chat", action="store_true",
                   help="Modelfile template with Gemma chat turns (for -it models); default: FIM + raw prompt")
    e.add_argument("--allow-pickle", action="store_true", help="allow loading pytorch_model.bin (trusted files only)")
    e.add_argument("--fim-mode", choices=MODES, default="psm",
                   help="FIM order of the Modelfile template: psm (CodeGemma's) or spm (suffix first)")
    e.add_argument("--force", action="store_true", help="replace an existing --gguf file and its Modelfile")
    add_allow_nonfinite(e)
    e.set_defaults(func=_run_export)


def add_allow_nonfinite(p: argparse.ArgumentParser) -> None:
    """--allow-nonfinite, on every command that loads a model."""
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load weights that hold NaN or Inf values (refused by default) with a warning")


def _run_init(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from codegemma.atomic import check_output_dir
    from codegemma.model.config import get_preset
    from codegemma.model.random_init import init_model_dir, size_warning

    check_output_dir(args.out, args.force, option="--out")
    note = size_warning(args.preset, get_preset(args.preset))
    if note:  # said before the long allocation, not after it
        print(f"codegemma init: warning: {note}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = init_model_dir(args.preset, args.out, seed=args.seed, force=args.force)
    print(f"wrote a random {args.preset} model to {out}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from codegemma.atomic import check_output_file
    from codegemma.model.gguf_export import export_gguf, modelfile_path
    from codegemma.models import resolve_model

    # before the model is read: an existing export is kept unless --force says otherwise
    check_output_file(args.gguf, args.force, option="--gguf", example="model.gguf")
    check_output_file(modelfile_path(args.gguf), args.force)
    gguf_path, modelfile = export_gguf(resolve_model(args.model), args.gguf, dtype=args.dtype,
                                      allow_pickle=args.allow_pickle, chat=args.chat,
                                      fim_mode=args.fim_mode, allow_nonfinite=args.allow_nonfinite)
    print(f"wrote {gguf_path} and {modelfile} (ollama create NAME -f {modelfile})")
    return 0
