"""Core subcommands: generate, complete, chat (init lives in codegemma.model.commands).

Each prints only what the model produced, streamed as it is generated. All three go through
codegemma.api (and so through the one Engine); torch is imported inside the command functions.
"""

from __future__ import annotations

import argparse
import os
import sys

from codegemma.fim.format import MODES
from codegemma.infer.modes import DECODE_MODES
from codegemma.model.commands import add_allow_nonfinite


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help="continue a prompt (prints only the continuation)",
                              description="Continue TEXT with the model; temperature 0 (default) is greedy. "
                                          "Special-token texts in the prompt become control tokens.")
    _model_args(g, builtin_default=True)
    g.add_argument("--prompt", required=True, help="the text to continue (<bos> is added)")
    _sampling_args(g, max_new_tokens=128)
    g.set_defaults(func=_run_generate)

    c = subparsers.add_parser("complete", help="fill in the middle at a cursor (prints only the middle)",
                              description="Fill-in-the-middle: give --prefix/--suffix, or FILE:LINE:COL (1-based; "
                                          "the prefix is the file's text before that cursor, the suffix the text "
                                          "after it, and the file's relative path goes on the path line).")
    _model_args(c, builtin_default=True)
    c.add_argument("location", nargs="?", metavar="FILE:LINE:COL", help="cursor position in a file")
    c.add_argument("--prefix", help="code before the cursor")
    c.add_argument("--suffix", help="code after the cursor (default empty)")
    c.add_argument("--path", help="file path for the path line (default: FILE's relative path, else none)")
    c.add_argument("--mode", choices=MODES, default="psm", help="FIM order (default psm)")
    c.add_argument("--context", nargs="+", default=[], metavar="FILE",
                   help="other files placed before the current one, after the repository context")
    c.add_argument("--no-repo-context", dest="repo_context", action="store_false",
                   help="inside a git repository, do not put the files FILE depends on (by its imports) "
                        "ahead of it")
    c.add_argument("--show-prompt", action="store_true",
                   help="print the exact prompt text (control tokens written out) and exit without generating")
    _sampling_args(c, max_new_tokens=128)
    c.set_defaults(func=_run_complete)

    h = subparsers.add_parser("chat", help="chat with an instruction-tuned model (7b-it)",
                              description="With --message: print one answer. Without: an interactive "
                                          "conversation (empty line or Ctrl-D ends it).")
    _model_args(h, builtin_default=False)
    h.add_argument("--message", help="one user message; prints the answer and exits")
    _sampling_args(h, max_new_tokens=512)
    h.set_defaults(func=_run_chat)


def _model_args(p: argparse.ArgumentParser, builtin_default: bool) -> None:
    if builtin_default:
        p.add_argument("--model", default=None, metavar="DIR",
                       help="model directory (Hugging Face format), or nano (default): codegemma-nano, "
                            "the small model built into the package")
    else:  # chat needs an instruction-tuned model, which the built-in base model is not
        p.add_argument("--model", required=True, metavar="DIR",
                       help="instruction-tuned model directory (Hugging Face format, e.g. codegemma-7b-it)")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--max-seq-len", type=int, default=None, help="KV cache length (default: the model's, at most 8192)")
    p.add_argument("--decode", choices=DECODE_MODES, default="auto",
                   help="decode step: auto = CUDA graphs on GPU, eager on CPU; compile adds torch.compile "
                        "(fastest per token, but compiles for a minute first)")
    add_allow_nonfinite(p)
    add_quantize_args(p)


def add_quantize_args(p: argparse.ArgumentParser) -> None:
    """--quantize / --group-size, shared by generate, complete, chat, serve and eval run."""
    p.add_argument("--quantize", choices=("int8", "int4"), default=None,
                   help="weight-only quantization applied while loading: int8 (per output channel; CPU "
                        "and GPU) or int4 (grouped; a quarter of bf16's memory). Default: none")
    p.add_argument("--group-size", type=int, choices=(32, 64, 128, 256), default=128,
                   help="int4: inputs per scale/zero group (default 128; smaller is more accurate and larger)")


def _sampling_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off (the CodeGemma advice)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible output)")
    p.add_argument("--stop", action="append", default=[], help="extra stop string (repeatable)")


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                stop=tuple(args.stop))


def _load(args):
    from codegemma.api import load
    from codegemma.device import resolve_device

    device = resolve_device(args.device)  # a device this machine lacks: one line, before any loading
    return load(args.model, device=device, dtype=args.dtype, max_slots=1, max_seq_len=args.max_seq_len,
                decode=args.decode, allow_nonfinite=args.allow_nonfinite, quantize=args.quantize,
                group_size=args.group_size)


def _prompt_builder(args):
    """The prompt builder `_load(args)` would give, from the tokenizer and config.json alone."""
    from codegemma.fim.prompt import PromptBuilder
    from codegemma.infer.engine import context_length
    from codegemma.model.checkpoint import load_config
    from codegemma.models import resolve_model
    from codegemma.tokenizer import Tokenizer

    model = resolve_model(args.model)
    config = load_config(model)
    return PromptBuilder(Tokenizer.load(model), context_length(config, args.max_seq_len))


def _write(text: str) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(text)
    else:  # bytes, so any character prints whatever the terminal's encoding
        out.write(text.encode("utf-8", "replace"))
    sys.stdout.flush()


def _print_stream(deltas) -> str:
    """Print the model's text as it comes. On a terminal, end with a newline so the shell prompt does
    not land on the suggestion; into a pipe or file, stdout is exactly the model's text (a script's
    `$(codegemma complete ...)` or an editor gets the middle byte for byte, trailing newline or not)."""
    text = ""
    try:
        for delta in deltas:
            _write(delta)
            text += delta
    finally:  # also when the reader is gone (BrokenPipeError) or on Ctrl-C: free the engine's slot at once
        getattr(deltas, "close", lambda: None)()
    if text and not text.endswith("\n") and sys.stdout.isatty():
        _write("\n")
    return text


def _note_cut(args, prompt) -> None:
    """stdout holds only the model's text; what fitting dropped is a note on stderr."""
    if prompt.truncated:
        print(f"codegemma {args.command}: note: prompt cut to fit the {prompt.n_ctx}-token context: "
              f"{prompt.cut.describe()}", file=sys.stderr)


def _run_generate(args) -> int:
    with _load(args) as cg:
        prompt = cg.prompts.text(args.prompt, max_new_tokens=args.max_new_tokens)
        _note_cut(args, prompt)
        _print_stream(cg.run(prompt, stream=True, **_sampling(args)))
    return 0


def parse_location(location: str) -> tuple[str, int, int]:
    """FILE:LINE:COL -> (file, line, col); the file name itself may contain colons."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[0].strip() or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{location!r}: expected FILE:LINE:COL with 1-based numbers, e.g. src/app.py:12:5")
    return parts[0], int(parts[1]), int(parts[2])


def split_at_cursor(text: str, line: int, col: int, where: str) -> tuple[str, str]:
    """Text before and after the 1-based (line, col) cursor."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise ValueError(f"{where}: line {line} is outside the file (it has {len(lines)} lines)")
    if not 1 <= col <= len(lines[line - 1]) + 1:
        raise ValueError(f"{where}: column {col} is outside line {line} "
                         f"(columns 1..{len(lines[line - 1]) + 1})")
    offset = sum(len(s) + 1 for s in lines[:line - 1]) + col - 1
    return text[:offset], text[offset:]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; complete works on source files") from None


def _rel(path: str) -> str:
    return os.path.relpath(path).replace(os.sep, "/")


def _run_complete(args) -> int:
    if args.location and (args.prefix is not None or args.suffix is not None):
        raise ValueError("give either FILE:LINE:COL or --prefix/--suffix, not both")
    repo = None
    if args.location:
        file, line, col = parse_location(args.location)
        prefix, suffix = split_at_cursor(_read(file), line, col, args.location)
        path = args.path or _rel(file)
        if args.repo_context and args.path is None:
            repo = os.getcwd()  # `path` is relative to it; the git repository is found from the file
    elif args.prefix is not None:
        prefix, suffix, path = args.prefix, args.suffix or "", args.path
    else:
        raise ValueError("nothing to complete: give --prefix TEXT [--suffix TEXT] or FILE:LINE:COL")
    context = [(_rel(f), _read(f)) for f in args.context]
    fim = dict(mode=args.mode, path=path, context=context, repo=repo, max_new_tokens=args.max_new_tokens)
    if args.show_prompt:  # the tokenizer and the context length are enough: no weights are loaded
        builder = _prompt_builder(args)
        _write(builder.render(builder.fim(prefix, suffix, **fim)) + "\n")
        return 0
    with _load(args) as cg:
        prompt = cg.prompts.fim(prefix, suffix, **fim)
        _note_cut(args, prompt)
        middle = _print_stream(cg.run(prompt, stream=True, **_sampling(args)))
    if not middle:
        # stdout holds only the middle; say on stderr why there is nothing, so it is not mistaken for a hang
        print("(empty middle: the model ended the infill at once; a random model from `codegemma init` "
              "always does this, a trained one when it sees nothing to insert)", file=sys.stderr)
    return 0


def _run_chat(args) -> int:
    from codegemma.models import is_builtin

    if is_builtin(args.model):
        raise ValueError(f"--model {args.model}: codegemma-nano is a base code model, not instruction-tuned, so "
                         "chat would answer with unrelated code; use `codegemma complete` or `generate` with it, "
                         "or chat with an instruction-tuned model (--model DIR, e.g. codegemma-7b-it)")
    with _load(args) as cg:
        if args.message is not None:
            _print_stream(cg.chat([{"role": "user", "content": args.message}], stream=True, **_sampling(args)))
            return 0
        messages: list[dict] = []
        while True:
            try:
                text = input("you> ")
            except EOFError:
                break
            if not text.strip():
                break
            messages.append({"role": "user", "content": text})
            _write("model> ")
            answer = "".join(_tee(cg.chat(messages, stream=True, **_sampling(args))))
            _write("\n")
            messages.append({"role": "assistant", "content": answer})
    return 0


def _tee(deltas):
    for delta in deltas:
        _write(delta)
        yield delta
