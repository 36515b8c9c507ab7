"""Where a tokenizer lives: the one place that turns a path into a tokenizer file.

Every command that needs a tokenizer (loading a model, `data prepare --tokenizer`, `train`,
`export`, `eval`, `init`) asks here, so they accept the same paths and fail with the same message.
No heavy imports: this runs before torch or tokenizers are loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

# The tokenizer proper, in the order a directory holding both is read: tokenizers' JSON first
# (fast, what codegemma writes), SentencePiece's model second (Google's releases carry both).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# Read by transformers beside the tokenizer; copied along with it, never needed by codegemma.
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def find_tokenizer(path: str | os.PathLike, prefer: tuple[str, ...] = TOKENIZER_FILES) -> Path | None:
    """The tokenizer file `path` names: the file itself, or the first of `prefer` inside a
    directory; None when there is none."""
    p = Path(path)
    if p.is_dir():
        return next((p / name for name in prefer if (p / name).is_file()), None)
    return p if p.is_file() else None


def locate_tokenizer(path: str | os.PathLike, prefer: tuple[str, ...] = TOKENIZER_FILES) -> Path:
    """find_tokenizer, or FileNotFoundError with the one message that says what a tokenizer is."""
    found = find_tokenizer(path, prefer)
    if found is None:
        raise FileNotFoundError(
            f"{path}: no tokenizer.json or tokenizer.model here; give a tokenizer file or a directory "
            "holding one (a model directory, or one written by `codegemma tokenizer train`)")
    return found


def tokenizer_files(directory: str | os.PathLike) -> list[Path]:
    """Every tokenizer file present in `directory`, side files included: what to copy to move a
    tokenizer along with a model or a data set."""
    d = Path(directory)
    return [d / name for name in TOKENIZER_FILES + TOKENIZER_SIDE_FILES if (d / name).is_file()]
