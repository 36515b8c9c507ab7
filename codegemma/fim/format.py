"""The one owner of CodeGemma's prompt formats: FIM (PSM and SPM), multi-file context, chat.

Training data (codegemma.data) and inference (engine, server, CLI, eval) both render through
these functions, so the layout the model learns is the layout it is prompted with.

PSM, exactly as the report gives it (no whitespace added around the sentinels):
    [path\\n]<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}
SPM (our documented choice; the report gives no SPM order): suffix first, the order of Bavarian et
al. 2022 (section 3) and of llama.cpp's `spm_infill`:
    [path\\n]<|fim_suffix|>{suffix}<|fim_prefix|>{prefix}<|fim_middle|>{middle}
Two reasons. CodeGemma 2B, run past its middle in Google's blog post, starts the next file as
`path\\n<|fim_suffix|>`, which only a suffix-first order teaches. And the token after <|fim_middle|>
is then always the middle, in both orders: with StarCoder's variant (`<PRE><SUF>{suffix}<MID>{prefix}`)
half of all training examples put the top of a file after <|fim_middle|>, and our first small model
answered PSM prompts with module docstrings and imports.
Multi-file context: other files as `path\\n{text}`, joined and closed by <|file_separator|>, ahead
of the current file.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from codegemma.tokenizer.special import SPECIAL_TOKENS

FIM_PREFIX = SPECIAL_TOKENS["fim_prefix"].text
FIM_MIDDLE = SPECIAL_TOKENS["fim_middle"].text
FIM_SUFFIX = SPECIAL_TOKENS["fim_suffix"].text
FILE_SEPARATOR = SPECIAL_TOKENS["file_separator"].text
BOS = SPECIAL_TOKENS["bos"].text
EOS = SPECIAL_TOKENS["eos"].text
START_OF_TURN = SPECIAL_TOKENS["start_of_turn"].text
END_OF_TURN = SPECIAL_TOKENS["end_of_turn"].text

MODES = ("psm", "spm")  # the one list of FIM orders: CLI choices, server, eval and data all read it
STOP_NAMES = ("fim_prefix", "fim_middle", "fim_suffix", "file_separator", "eos", "end_of_turn")
# Generation output is cut at the first of these.
STOP_TEXTS = tuple(SPECIAL_TOKENS[n].text for n in STOP_NAMES)
SENTINEL_TEXTS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FILE_SEPARATOR)


def check_mode(mode: str) -> str:
    """`mode` if it is a FIM order, else one clear ValueError."""
    if mode not in MODES:
        raise ValueError(f"unknown FIM mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def render_file(path: str, text: str) -> str:
    """A file as the model sees it in a multi-file sequence: its path line, then its text."""
    return f"{path}\n{text}"


def join_files(chunks: Iterable[str]) -> str:
    return FILE_SEPARATOR.join(chunks)


def render_context(context: Sequence[tuple[str, str]]) -> str:
    """Other files ahead of the current one: `path\\n{text}<|file_separator|>` each."""
    return "".join(render_file(p, t) + FILE_SEPARATOR for p, t in context)


def render_fim(prefix: str, suffix: str, mode: str = "psm", path: str | None = None,
               context: Sequence[tuple[str, str]] = (), middle: str = "") -> str:
    """A FIM prompt (or, with `middle`, a training example) for the current file."""
    head = render_context(context) + (f"{path}\n" if path else "")
    if check_mode(mode) == "psm":
        return f"{head}{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"
    return f"{head}{FIM_SUFFIX}{suffix}{FIM_PREFIX}{prefix}{FIM_MIDDLE}{middle}"


def parse_fim(text: str) -> dict:
    """Inverse of render_fim for one file: returns mode, path, context, prefix, suffix, middle.

    `text` is what render_fim produced (optionally followed by nothing else). Raises ValueError if
    the sentinels are not in a FIM order.
    """
    chunks = text.split(FILE_SEPARATOR)
    context = []
    for chunk in chunks[:-1]:
        p, _, t = chunk.partition("\n")
        context.append((p, t))
    current = chunks[-1]
    starts = [i for i in (current.find(FIM_PREFIX), current.find(FIM_SUFFIX)) if i >= 0]
    if not starts:
        raise ValueError("not a FIM prompt: no <|fim_prefix|> or <|fim_suffix|>")
    i = min(starts)
    head, body = current[:i], current[i:]
    path = head[:-1] if head.endswith("\n") else (head or None)
    if body.startswith(FIM_SUFFIX):  # SPM
        suffix, sep, rest = body[len(FIM_SUFFIX):].partition(FIM_PREFIX)
        prefix, sep2, middle = rest.partition(FIM_MIDDLE)
        mode, error = "spm", "SPM needs <|fim_prefix|> then <|fim_middle|> after the suffix"
    else:
        prefix, sep, rest = body[len(FIM_PREFIX):].partition(FIM_SUFFIX)
        suffix, sep2, middle = rest.partition(FIM_MIDDLE)
        mode, error = "psm", "PSM needs <|fim_suffix|> then <|fim_middle|> after the prefix"
    if not (sep and sep2):
        raise ValueError(f"not a FIM prompt: {error}")
    return {"mode": mode, "path": path, "context": context, "prefix": prefix, "suffix": suffix, "middle": middle}


# ---- chat (the Gemma / CodeGemma-7B-IT template) --------------------------------------------------
def chat_turns(messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(role, content) turns, role "user" or "model", checked: alternating, starting with user."""
    turns = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role == "system":
            raise ValueError("Gemma has no system role: put the instructions in the first user message")
        if role not in ("user", "assistant", "model"):
            raise ValueError(f"message {i}: unknown role {role!r}; use 'user' or 'assistant'")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string")
        role = "model" if role in ("assistant", "model") else "user"
        if (role == "user") != (i % 2 == 0):
            raise ValueError("conversation roles must alternate user/assistant/user/..., starting with user")
        turns.append((role, content.strip()))
    return turns


def normalize_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """What chat clients send, made a Gemma conversation: system (and developer) text goes into the
    first user turn, consecutive turns of one role are merged."""
    system = "\n\n".join(m["content"] for m in messages if m.get("role") in ("system", "developer") and m.get("content"))
    turns: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        role = "assistant" if role in ("assistant", "model") else role
        content = m.get("content") or ""
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    if system:
        if turns and turns[0]["role"] == "user":
            turns[0]["content"] = system + "\n\n" + turns[0]["content"]
        else:
            turns.insert(0, {"role": "user", "content": system})
    if not turns:
        raise ValueError("at least one user message is required")
    return turns


def render_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """`<bos><start_of_turn>user\\n{msg}<end_of_turn>\\n<start_of_turn>model\\n` and so on: the
    layout as text (prompt.chat_ids builds the same as ids, message texts kept plain)."""
    text = BOS
    for role, content in chat_turns(messages):
        text += f"{START_OF_TURN}{role}\n{content}{END_OF_TURN}\n"
    if add_generation_prompt:
        text += f"{START_OF_TURN}model\n"
    return text


# ---- stopping -----------------------------------------------------------------------------------
def cut_at_stop(text: str, extra_stops: Iterable[str] = ()) -> tuple[str, str | None]:
    """Cut `text` at the earliest stop text (the six CodeGemma stops plus `extra_stops`).

    Returns (text before the stop, the stop that matched or None).
    """
    best, found = len(text), None
    for stop in (*STOP_TEXTS, *extra_stops):
        if not stop:
            continue
        i = text.find(stop)
        if 0 <= i < best or (i == best and found is not None and len(stop) > len(found)):
            best, found = i, stop
    return text[:best], found


def stop_token_ids(tokenizer) -> list[int]:
    """Ids of the stop tokens this tokenizer has (FIM sentinels, file separator, eos, end_of_turn)."""
    return [tokenizer.token_id(n) for n in STOP_NAMES if tokenizer.has(n)]
