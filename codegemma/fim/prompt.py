"""The one path from a request to the token ids the engine runs: FIM, plain text, token ids, chat.

Every caller builds its prompt here: the CLI (`complete`, `generate`, `chat`), the Python API,
the server's three protocol routers and `eval run`. The engine receives ids and only checks them.

`PromptBuilder(tokenizer, n_ctx, fim_mode)` returns a `Prompt`: ids with <bos> first, the number
of tokens to generate (the request's, capped so prompt + generation fit the context) and a `Cut`
that says what was dropped to make it fit.

Tokenisation. Text a user or client sent (prefix, suffix, file paths and contents, the text after
<|fim_middle|>, chat messages) is data: it is encoded with `parse_special=False`, so `<eos>` or
`<|fim_middle|>` written in a source file stay characters; control tokens come only from the
layout itself (format.py's order). Each piece is encoded once, separately: tokenizers split at
control tokens anyway, so this equals encoding the rendered text. A plain-text prompt is the
exception: its special-token texts are the client's own layout (clients render FIM prompts
themselves) and become control tokens.

Fitting (the policy llama.cpp's /infill follows, and what editors expect: a long file never fails):
1. The context is split between prompt and generation: the tokens to generate are reserved, but
   never more than half the context (a huge or "unlimited" request is capped instead of starving
   the prompt); one position is <bos>.
2. The fixed part (path line, sentinels, the text after <|fim_middle|>) is always kept; if it
   alone does not fit, the request cannot be served (PromptError).
3. The current file comes first. If prefix + suffix do not fit, the prefix keeps up to
   `prefix_share` (3/4, llama.cpp's split) of the room and the suffix the rest; a side that needs
   less leaves its share to the other. The prefix loses its start, the suffix its end.
4. Other files fill what is left, the last ones first (they sit next to the current file; clients
   and the repository context list the most relevant last); the first file that does not fit
   whole keeps its end if at least MIN_PARTIAL_FILE_TOKENS of it fit, and every file before it
   is dropped.
Before anything is encoded, each text is cut to the most characters that could still be needed
(the budget times the longest piece in the vocabulary), so a multi-megabyte request costs no more
than a full context's worth of tokenising.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from codegemma.fim.format import BOS, MODES, chat_turns, check_mode, normalize_messages, parse_fim, render_fim

MIN_PARTIAL_FILE_TOKENS = 16  # below this a partial context file is not worth its path line
PREFIX_SHARE = 0.75


class PromptError(ValueError):
    """The request cannot become a prompt (a fixed part too long, a bad conversation, bad ids)."""


class ContextOverflow(PromptError):
    """A prompt that may not be cut is longer than the context (llama.cpp's
    exceed_context_size_error: it refuses such a prompt rather than cutting it)."""

    def __init__(self, n_prompt_tokens: int, n_ctx: int, what: str = "the prompt"):
        super().__init__(f"{what} is {n_prompt_tokens} tokens, which does not fit the context of {n_ctx} "
                         "tokens with room to generate; shorten it, or start the server with a larger "
                         "--max-seq-len")
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx


@dataclass(frozen=True)
class Cut:
    """What fitting dropped (all zero: the prompt is what was sent)."""
    prefix_tokens: int = 0  # from the start of the prefix (or of a plain-text prompt)
    suffix_tokens: int = 0  # from the end of the suffix
    files_dropped: int = 0  # context files left out entirely
    file_tokens: int = 0  # from the start of the one context file that was kept in part

    def __bool__(self) -> bool:
        return any((self.prefix_tokens, self.suffix_tokens, self.files_dropped, self.file_tokens))

    def describe(self) -> str:
        parts = []
        if self.prefix_tokens:
            parts.append(f"{self.prefix_tokens:,} tokens from the start of the prefix")
        if self.suffix_tokens:
            parts.append(f"{self.suffix_tokens:,} tokens from the end of the suffix")
        if self.files_dropped:
            parts.append(f"{self.files_dropped} context file{'s' if self.files_dropped > 1 else ''}")
        if self.file_tokens:
            parts.append(f"{self.file_tokens:,} tokens from the start of a context file")
        return "dropped " + ", ".join(parts) if parts else "nothing dropped"


@dataclass(frozen=True)
class Prompt:
    ids: list[int]  # what the engine runs, <bos> first
    max_new_tokens: int  # the request's limit, capped so prompt + generation fit n_ctx
    n_ctx: int  # the context this prompt was fitted into
    cut: Cut = field(default_factory=Cut)

    @property
    def truncated(self) -> bool:
        return bool(self.cut)


def split_budget(avail: int, n_pre: int, n_suf: int, prefix_share: float = PREFIX_SHARE) -> tuple[int, int]:
    """Tokens (prefix, suffix) to keep when they need more than `avail` together."""
    if n_pre + n_suf <= avail:
        return n_pre, n_suf
    keep_pre = min(n_pre, max(avail - n_suf, int(avail * prefix_share)))
    return keep_pre, min(n_suf, avail - keep_pre)


class PromptBuilder:
    """Prompts for one tokenizer and context length. Thread-safe (it keeps no per-request state)."""

    def __init__(self, tokenizer, n_ctx: int, fim_mode: str = "psm"):
        self.tokenizer = tokenizer
        self.n_ctx = int(n_ctx)
        self.fim_mode = check_mode(fim_mode)
        if self.n_ctx < 2:
            raise ValueError(f"a context of {n_ctx} tokens cannot hold a prompt")

    # ---- budget ---------------------------------------------------------------------------------
    def limits(self, max_new_tokens: int | None, n_ctx: int | None = None) -> tuple[int, int, int]:
        """(context, tokens wanted, prompt budget without <bos>) for one request. None or a negative
        number of tokens means "as many as fit"; `n_ctx` may only shrink the context."""
        ctx = self.n_ctx if not n_ctx or n_ctx <= 0 else min(int(n_ctx), self.n_ctx)
        want = ctx if max_new_tokens is None or max_new_tokens < 0 else int(max_new_tokens)
        reserve = min(want, ctx // 2)
        return ctx, want, ctx - reserve - 1

    def _prompt(self, body: list[int], want: int, ctx: int, cut: Cut, bos: bool = True) -> Prompt:
        ids = [self.tokenizer.bos_id, *body] if bos else list(body)
        return Prompt(ids, max(0, min(want, ctx - len(ids))), ctx, cut)

    def _char_cap(self, budget: int) -> int:
        """Characters of one text that can matter for `budget` tokens."""
        return max(0, budget) * self.tokenizer.max_piece_chars + 1

    def _plain(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(list(texts), parse_special=False)

    # ---- fill in the middle ------------------------------------------------------------------------
    def fim(self, prefix: str, suffix: str = "", *, path: str | None = None,
            context: Sequence[tuple[str, str]] = (), middle: str = "", mode: str | None = None,
            repo: str | os.PathLike | None = None, max_new_tokens: int | None = None,
            n_ctx: int | None = None) -> Prompt:
        """A FIM prompt for the cursor between `prefix` and `suffix`.

        path: the current file's path line. context: other files (path, text), least relevant
        first. middle: text already typed after the cursor's line start (llama.cpp's `prompt`):
        the model continues after it. repo: a repository root holding `path` (relative to it, or
        absolute): the files the current file depends on come first, nearest dependencies first
        within the room the current file leaves, in the order training packed them (codegemma.repo
        chooses them); `context` files follow, nearest the cursor; the path line is the path
        relative to the repository, as in training data."""
        if repo is not None:
            path, context = self._with_repository(prefix, suffix, path, context, middle, mode, repo,
                                                  max_new_tokens, n_ctx)
        tok = self.tokenizer
        tok.require_fim()
        mode = check_mode(mode or self.fim_mode)
        ctx, want, budget = self.limits(max_new_tokens, n_ctx)
        cap = self._char_cap(budget)
        if len(middle) > cap or len(path or "") > cap:  # surely more tokens than the budget: not worth encoding
            raise self._fixed_too_long(len(middle), budget, ctx)
        kept_files, dropped_early = _within_chars([(str(p), str(t)) for p, t in context], cap)
        pieces = [prefix[-cap:], suffix[:cap], f"{path}\n" if path else "", middle]
        for p, t in kept_files:
            pieces += [f"{p}\n", t[-cap:]]
        enc = self._plain(pieces)
        pre, suf, head, mid = enc[:4]
        files = [(enc[4 + 2 * i], enc[5 + 2 * i]) for i in range(len(kept_files))]
        # tokens dropped by the character cut are counted below as dropped tokens (at least 1 each)
        pre_lost = len(prefix) > cap
        suf_lost = len(suffix) > cap

        fixed = len(head) + 3 + len(mid)
        if fixed > budget:
            raise self._fixed_too_long(len(middle), budget, ctx, fixed)
        avail = budget - fixed
        keep_pre, keep_suf = split_budget(avail, len(pre), len(suf))
        room = avail - keep_pre - keep_suf
        shown, files_dropped, file_cut = _fit_files(files, room)
        files_dropped += dropped_early
        pre_kept = pre[len(pre) - keep_pre:]
        suf_kept = suf[:keep_suf]
        body = fim_ids(tok, pre_kept, suf_kept, mode, head, shown, mid)
        cut = Cut(len(pre) - keep_pre + (1 if pre_lost and keep_pre == len(pre) else 0),
                  len(suf) - keep_suf + (1 if suf_lost and keep_suf == len(suf) else 0),
                  files_dropped, file_cut)
        return self._prompt(body, want, ctx, cut)

    @staticmethod
    def _fixed_too_long(middle_chars: int, budget: int, ctx: int, fixed: int | None = None) -> PromptError:
        takes = f"takes {fixed} tokens, more than" if fixed is not None else "is longer than"
        return PromptError(
            f"the fixed part of the FIM prompt (sentinels, path line and the {middle_chars} characters "
            f"after the middle token) {takes} the {budget} tokens available in a context of {ctx}; send a "
            "shorter path or 'prompt', or fewer tokens to generate")

    def _with_repository(self, prefix, suffix, path, context, middle, mode, repo, max_new_tokens, n_ctx):
        """(path line, context) with the repository's files that the current file depends on ahead
        of `context`, within the room the current file and `context` leave."""
        from codegemma.repo import repository_context, repository_path

        if path is None:
            raise PromptError("a repository context needs the current file's path")
        current = Path(path) if os.path.isabs(path) else Path(repo) / path
        found = repository_path(current)
        if found is None:  # not inside a git repository: the file alone
            return path, context
        path = found[1]  # the path line training data has: relative to the repository root
        room = self.context_room(prefix, suffix, path=path, context=context, middle=middle, mode=mode,
                                 max_new_tokens=max_new_tokens, n_ctx=n_ctx)
        count = lambda text: len(self.tokenizer.encode(text, parse_special=False))  # noqa: E731
        files = repository_context(current, room, count, text=prefix + suffix)
        return path, [*files, *context]

    def context_room(self, prefix: str, suffix: str = "", *, path: str | None = None,
                     context: Sequence[tuple[str, str]] = (), middle: str = "", mode: str | None = None,
                     max_new_tokens: int | None = None, n_ctx: int | None = None) -> int:
        """Tokens left for more files once the current file and `context` are in (0 if anything had
        to be cut): the budget the repository context gets."""
        ctx, want, budget = self.limits(max_new_tokens, n_ctx)
        p = self.fim(prefix, suffix, path=path, context=context, middle=middle, mode=mode,
                     max_new_tokens=max_new_tokens, n_ctx=n_ctx)
        return 0 if p.truncated else max(0, budget - (len(p.ids) - 1))

    # ---- plain text and token ids --------------------------------------------------------------
    def text(self, text: str, *, max_new_tokens: int | None = None, n_ctx: int | None = None,
             cut: bool = True) -> Prompt:
        """A prompt the caller rendered itself: special-token texts in it are control tokens.

        A FIM prompt (what Continue, llama.vscode's OpenAI mode and minuet send) is parsed and cut
        like a structured one; any other text keeps its end, or with cut=False (llama.cpp's
        /completion and OpenAI's routes) is run whole, generating what room is left, and raises
        ContextOverflow if it leaves none. A leading `<bos>` is not doubled."""
        if text.startswith(BOS):
            text = text[len(BOS):]
        if not text:
            raise PromptError("the prompt is empty; send some text")
        ctx, want, budget = self.limits(max_new_tokens, n_ctx)
        parts = _as_fim(text)
        if parts is not None and self.tokenizer.has_fim:
            return self.fim(parts["prefix"], parts["suffix"], path=parts["path"], context=parts["context"],
                            middle=parts["middle"], mode=parts["mode"], max_new_tokens=max_new_tokens,
                            n_ctx=n_ctx)
        if not cut:
            at_least = len(text) // self.tokenizer.max_piece_chars + 1  # <bos> + the fewest tokens possible
            if at_least >= ctx:  # surely too long: not worth tokenising megabytes to say so
                raise ContextOverflow(at_least, ctx)
            return self._whole([self.tokenizer.bos_id, *self.tokenizer.encode(text)], want, ctx)
        cap = self._char_cap(budget)
        ids = self.tokenizer.encode(text[-cap:])
        keep = ids[max(0, len(ids) - budget):] if budget > 0 else []
        if not keep:
            raise PromptError(f"no room for the prompt in a context of {ctx} tokens; ask for fewer tokens")
        lost = len(ids) - len(keep) + (1 if len(text) > cap and len(keep) == len(ids) else 0)
        return self._prompt(keep, want, ctx, Cut(prefix_tokens=lost))

    def tokens(self, ids: Sequence[int], *, max_new_tokens: int | None = None,
               n_ctx: int | None = None, cut: bool = True) -> Prompt:
        """Token ids sent by the client, run as given (no <bos> added); the start is dropped if they
        do not fit (with cut=False: ContextOverflow, as text())."""
        vocab = self.tokenizer.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise PromptError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if not ids:
            raise PromptError("the prompt is empty; send at least one token id")
        ctx, want, budget = self.limits(max_new_tokens, n_ctx)
        if not cut:
            return self._whole(list(ids), want, ctx)
        kept = list(ids)[-(budget + 1):]
        return self._prompt(kept, want, ctx, Cut(prefix_tokens=len(ids) - len(kept)), bos=False)

    # ---- chat ----------------------------------------------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, str]], *, max_new_tokens: int | None = None,
             n_ctx: int | None = None, continue_final: bool = True, add_generation_prompt: bool = True) -> Prompt:
        """Gemma's chat template. System messages join the first user turn (Gemma has no system
        role) and consecutive turns of one role are merged, so common clients work unchanged. A
        conversation that ends with the model's turn is continued from it (continue_final, as
        llama.cpp's server and Ollama do); otherwise a model turn is opened (add_generation_prompt)."""
        ctx, want, _ = self.limits(max_new_tokens, n_ctx)
        try:
            turns = normalize_messages(messages)
            at_least = sum(len(t["content"]) for t in turns) // self.tokenizer.max_piece_chars
            if at_least >= ctx:  # surely too long: not worth tokenising megabytes to say so
                raise ContextOverflow(at_least, ctx, "the conversation")
            segments = chat_ids(self.tokenizer, turns, add_generation_prompt=add_generation_prompt,
                                continue_final=continue_final)
        except ContextOverflow:
            raise
        except ValueError as exc:
            raise PromptError(f"messages: {exc}") from None
        ids = [i for seg, _ in segments for i in seg]
        return self._whole(ids, want, ctx, what="the conversation")  # chat_ids starts with <bos>

    def _whole(self, ids: list[int], want: int, ctx: int, what: str = "the prompt") -> Prompt:
        """`ids` uncut (<bos> included): the answer gets the room left, as in llama.cpp, which
        refuses a prompt that leaves none."""
        if len(ids) >= ctx:
            raise ContextOverflow(len(ids), ctx, what)
        return self._prompt(ids, want, ctx, Cut(), bos=False)

    # ---- showing ---------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The exact text of a prompt (control tokens written out), e.g. for `--show-prompt`."""
        return self.tokenizer.decode(prompt.ids)


# ---- ids in format.py's order (inference prompts and training examples alike) --------------------
def fim_ids(tokenizer, prefix: list[int], suffix: list[int], mode: str, head: list[int] = (),
            context: Sequence[tuple[list[int], list[int]]] = (), middle: list[int] = ()) -> list[int]:
    """The ids of format.render_fim's layout, from already encoded pieces: context files
    (path-line ids, text ids) each closed by <|file_separator|>, the path line `head`, then the
    sentinels around prefix and suffix in `mode`'s order, then `middle`."""
    pre, suf, mid = (tokenizer.token_id(n) for n in ("fim_prefix", "fim_suffix", "fim_middle"))
    sep = tokenizer.token_id("file_separator")
    out: list[int] = []
    for path_ids, text_ids in context:
        out += [*path_ids, *text_ids, sep]
    out += head
    if check_mode(mode) == "psm":
        out += [pre, *prefix, suf, *suffix, mid]
    else:
        out += [suf, *suffix, pre, *prefix, mid]
    return out + list(middle)


def chat_ids(tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False,
             continue_final: bool = False) -> list[tuple[list[int], bool]]:
    """format.render_chat's layout as (ids, is_model_reply) segments: turn markers are control
    tokens, message texts are plain text. A model reply segment is its text plus <end_of_turn>
    (so a tuned model learns to stop). Used by the prompt builder and by instruction tuning.
    continue_final: a last model turn is left open (no <end_of_turn>, no new turn) for the model to
    continue: llama.cpp's assistant prefill, vLLM's continue_final_message."""
    sot, eot = tokenizer.token_id("start_of_turn"), tokenizer.token_id("end_of_turn")
    turns = chat_turns(messages)
    roles = {"user": "user\n", "model": "model\n"}
    texts = [content for _, content in turns] + list(roles.values()) + ["\n"]
    enc = tokenizer.encode_batch(texts, parse_special=False)
    content_ids, role_ids, newline = enc[:len(turns)], dict(zip(roles, enc[len(turns):])), enc[-1]
    segments: list[tuple[list[int], bool]] = []
    prompt = [tokenizer.bos_id]
    open_last = continue_final and bool(turns) and turns[-1][0] == "model"
    for i, ((role, _), ids) in enumerate(zip(turns, content_ids)):
        if role == "user":
            prompt += [sot, *role_ids["user"], *ids, eot, *newline]
        elif open_last and i == len(turns) - 1:
            segments.append((prompt + [sot, *role_ids["model"]], False))
            segments.append((list(ids), True))
            prompt = []
        else:
            segments.append((prompt + [sot, *role_ids["model"]], False))
            segments.append(([*ids, eot], True))
            prompt = list(newline)
    if add_generation_prompt and not open_last:
        prompt += [sot, *role_ids["model"]]
    if prompt:
        segments.append((prompt, False))
    return segments


# ---- helpers -------------------------------------------------------------------------------------------
def _as_fim(text: str) -> dict | None:
    """The parts of a client-rendered FIM prompt, if `text` is exactly one in either order."""
    try:
        parts = parse_fim(text)
    except ValueError:
        return None
    args = dict(mode=parts["mode"], path=parts["path"], context=parts["context"], middle=parts["middle"])
    return parts if render_fim(parts["prefix"], parts["suffix"], **args) == text else None


def _within_chars(files: list[tuple[str, str]], cap: int) -> tuple[list[tuple[str, str]], int]:
    """The last files whose texts together stay under `cap` characters (plus the first one past it,
    which may still fit in part); earlier ones cannot fit in the token budget at all."""
    kept, used = [], 0
    for p, t in reversed(files):
        if len(p) > cap:  # its path line alone is over the budget: it and every file before it drop
            break
        kept.append((p, t))
        used += len(p) + len(t) + 2
        if used > cap:
            break
    kept.reverse()
    return kept, len(files) - len(kept)


def _fit_files(files: list[tuple[list[int], list[int]]], room: int):
    """(files to show, files dropped, tokens cut from the partial one): the last files first,
    order kept; the first that does not fit whole keeps its end."""
    shown: list[tuple[list[int], list[int]]] = []
    file_cut = 0
    for head, text in reversed(files):
        cost = len(head) + len(text) + 1  # + <|file_separator|>
        if cost <= room:
            shown.append((head, text))
            room -= cost
            continue
        keep = room - len(head) - 1
        if keep >= MIN_PARTIAL_FILE_TOKENS:
            shown.append((head, text[len(text) - keep:]))
            file_cut = len(text) - keep
        break
    shown.reverse()
    dropped = len(files) - len(shown)
    return shown, dropped, file_cut


__all__ = ["MODES", "ContextOverflow", "Cut", "Prompt", "PromptBuilder", "PromptError", "split_budget", "fim_ids", "chat_ids"]
