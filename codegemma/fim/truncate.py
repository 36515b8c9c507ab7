"""Fit a FIM prompt into a token budget, keeping the text nearest the cursor.

What IDE clients expect from a server (llama.cpp's /infill does this) is that a long file never
fails a completion: the start of the prefix and the end of the suffix are dropped, then the other
files. The budget is counted in tokens of the real tokenizer.

Policy (`fit_fim`):
1. The fixed part (context separators, path line, FIM sentinels, the text after <|fim_middle|>)
   is always kept; if it alone exceeds the budget the request cannot be served (ValueError).
2. The current file comes first. If prefix + suffix do not fit, the prefix keeps up to
   `prefix_share` (3/4, llama.cpp's split) of the room and the suffix the rest; a side that
   needs less leaves its share to the other. The prefix loses its start, the suffix its end.
3. Other files (`context`) fill what is left, the last ones first (they sit next to the current
   file, and clients list the most relevant last); the first file that does not fit whole keeps
   its end, and every file before it is dropped.

Texts are cut on token boundaries of the text's own encoding and mapped back to characters, so
what is kept is always a substring of what the client sent; the rendered prompt is re-encoded and
checked against the budget (a cut can change how the neighbouring characters merge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from codegemma.fim.format import FILE_SEPARATOR, parse_fim, render_file, render_fim

# Below this many tokens a partial context file is not worth its path line.
MIN_PARTIAL_FILE_TOKENS = 16
_REPLACEMENT = "\ufffd"  # what a decoder emits for half of a multi-byte character


@dataclass(frozen=True)
class FittedPrompt:
    text: str  # the prompt to run (a FIM prompt unless the input was plain text)
    ids: list[int]  # text encoded without BOS; len(ids) <= budget
    truncated: bool  # True when anything the client sent was dropped
    dropped_files: int = 0  # context files left out entirely


def keep_tail(tokenizer, text: str, n_tokens: int) -> str:
    """The end of `text` that is about `n_tokens` tokens long (a suffix of `text`)."""
    if n_tokens <= 0 or not text:
        return ""
    ids = tokenizer.encode(text)
    if len(ids) <= n_tokens:
        return text
    kept = tokenizer.decode(ids[-n_tokens:]).lstrip(_REPLACEMENT)
    return text[len(text) - min(len(kept), len(text)):]


def keep_head(tokenizer, text: str, n_tokens: int) -> str:
    """The start of `text` that is about `n_tokens` tokens long (a prefix of `text`)."""
    if n_tokens <= 0 or not text:
        return ""
    ids = tokenizer.encode(text)
    if len(ids) <= n_tokens:
        return text
    kept = tokenizer.decode(ids[:n_tokens]).rstrip(_REPLACEMENT)
    return text[:min(len(kept), len(text))]


def _split_budget(avail: int, n_pre: int, n_suf: int, prefix_share: float) -> tuple[int, int]:
    """Tokens (prefix, suffix) to keep when they need more than `avail` together."""
    if n_pre + n_suf <= avail:
        return n_pre, n_suf
    keep_pre = min(n_pre, max(avail - n_suf, int(avail * prefix_share)))
    return keep_pre, min(n_suf, avail - keep_pre)


def _fit_context(tokenizer, context: Sequence[tuple[str, str]], room: int) -> list[tuple[str, str]]:
    """The context files that fit in `room` tokens, nearest (last) first; order kept."""
    kept: list[tuple[str, str]] = []
    for path, text in reversed(list(context)):
        cost = len(tokenizer.encode(render_file(path, text) + FILE_SEPARATOR))
        if cost <= room:
            kept.append((path, text))
            room -= cost
            continue
        header = len(tokenizer.encode(render_file(path, "") + FILE_SEPARATOR))
        if room - header >= MIN_PARTIAL_FILE_TOKENS:
            kept.append((path, keep_tail(tokenizer, text, room - header)))
        break
    kept.reverse()
    return kept


def fit_fim(tokenizer, prefix: str, suffix: str, budget: int, *, mode: str = "psm",
            path: str | None = None, context: Sequence[tuple[str, str]] = (), middle: str = "",
            prefix_share: float = 0.75) -> FittedPrompt:
    """Render a FIM prompt (format.render_fim, then `middle` after <|fim_middle|>) within `budget`.

    `middle` is text the client already typed after the cursor's line start (llama.cpp's `prompt`
    field): the model continues after it. `budget` counts prompt tokens without BOS.
    """
    context = [(str(p), str(t)) for p, t in context]

    def render(pre: str, suf: str, ctx) -> str:
        return render_fim(pre, suf, mode=mode, path=path, context=ctx) + middle

    text = render(prefix, suffix, context)
    ids = tokenizer.encode(text)
    if len(ids) <= budget:
        return FittedPrompt(text, ids, False)

    fixed = len(tokenizer.encode(render("", "", ())))
    if fixed > budget:
        raise ValueError(
            f"the fixed part of the FIM prompt (sentinels, path line and the {len(middle)} characters "
            f"after the middle token) takes {fixed} tokens, more than the {budget} available; "
            "send a shorter 'prompt' or fewer max tokens")
    avail = budget - fixed
    keep_pre, keep_suf = _split_budget(avail, len(tokenizer.encode(prefix)),
                                       len(tokenizer.encode(suffix)), prefix_share)
    kept_ctx = _fit_context(tokenizer, context, avail - keep_pre - keep_suf)
    # Re-encode the joined prompt: merges across the cut points can add a token or two.
    for _ in range(8):
        pre, suf = keep_tail(tokenizer, prefix, keep_pre), keep_head(tokenizer, suffix, keep_suf)
        text = render(pre, suf, kept_ctx)
        ids = tokenizer.encode(text)
        excess = len(ids) - budget
        if excess <= 0:
            break
        if kept_ctx:
            kept_ctx = kept_ctx[1:]
        elif keep_pre >= excess or keep_pre >= keep_suf:
            keep_pre = max(0, keep_pre - excess)
        else:
            keep_suf = max(0, keep_suf - excess)
    else:
        raise ValueError(f"could not fit the FIM prompt into {budget} tokens")
    return FittedPrompt(text, ids, True, len(context) - len(kept_ctx))


def fit_text(tokenizer, text: str, budget: int, prefix_share: float = 0.75) -> FittedPrompt:
    """Fit a prompt the client rendered itself.

    A FIM prompt (PSM is what Continue, llama.vscode's OpenAI mode and minuet send) is parsed and
    cut like a structured one; any other text keeps its last `budget` tokens.
    """
    ids = tokenizer.encode(text)
    if len(ids) <= budget:
        return FittedPrompt(text, ids, False)
    try:
        parts = parse_fim(text)
    except ValueError:
        parts = None
    if parts is not None:
        args = dict(mode=parts["mode"], path=parts["path"], context=parts["context"], middle=parts["middle"])
        if render_fim(parts["prefix"], parts["suffix"], **args) == text:
            return fit_fim(tokenizer, parts["prefix"], parts["suffix"], budget,
                           prefix_share=prefix_share, **args)
    if budget <= 0:
        raise ValueError("no room for the prompt: lower the number of tokens to generate")
    ids = ids[-budget:]
    return FittedPrompt(tokenizer.decode(ids), ids, True)
