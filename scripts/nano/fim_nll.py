"""How well a model fills in the middle in each FIM order: mean NLL per token of the reference middle.

Cheaper and smoother than pass@1 for comparing runs: a model that has learned PSM scores about as
well in PSM as in SPM; one whose PSM examples lost their prefix in training (scripts/nano/README.md)
scores clearly worse in PSM. The middle is scored up to and including the <|file_separator|> that
ends it in training, so stopping counts too.

    python scripts/nano/fim_nll.py MODEL_DIR [--benchmark humaneval-infill-single] [--n 50]
"""

from __future__ import annotations

import argparse
import sys

import torch

from codegemma.eval.registry import get_benchmark
from codegemma.fim.format import FILE_SEPARATOR, render_fim
from codegemma.model.checkpoint import load_model
from codegemma.tokenizer import Tokenizer


def middle_nll(model, tok: Tokenizer, prefix: str, middle: str, suffix: str, mode: str) -> float:
    prompt = tok.encode(render_fim(prefix, suffix, mode), add_bos=True)
    full = tok.encode(render_fim(prefix, suffix, mode, middle=middle) + FILE_SEPARATOR, add_bos=True)
    if full[:len(prompt)] != prompt:
        raise ValueError("the middle changed how the prompt tokenises; cannot score it separately")
    ids = torch.tensor([full], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(ids, torch.arange(len(full), device=ids.device)[None])
    logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
    return -logp[len(prompt) - 1:].mean().item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--benchmark", default="humaneval-infill-single")
    ap.add_argument("--n", type=int, default=50, help="tasks, spread evenly over the benchmark")
    ap.add_argument("--data-dir")
    args = ap.parse_args(argv)
    model, _ = load_model(args.model, device="cpu")
    tok = Tokenizer.load(args.model)
    problems = get_benchmark(args.benchmark).problems(args.data_dir)
    problems = problems[:: max(1, len(problems) // args.n)][: args.n]
    for mode in ("psm", "spm"):
        nll = [middle_nll(model, tok, p.prompt, p.canonical_solution, p.suffix, mode) for p in problems]
        print(f"{mode}: mean NLL per middle token {sum(nll) / len(nll):.3f} over {len(nll)} tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
