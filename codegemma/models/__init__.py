"""Models shipped inside the package, and the one place a `--model` argument is turned into a directory.

`nano/` is codegemma-nano, the built-in default model: a Hugging Face directory (config.json,
model.safetensors, tokenizer.json, ...) that transformers loads too. Its model card is nano/README.md.
Every command and `codegemma.load` pass their model argument through `resolve_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILTIN_NAME = "nano"
BUILTIN_DIR = Path(__file__).resolve().parent / BUILTIN_NAME
WEIGHTS_FILE = "model.safetensors"


def is_builtin(model: str | os.PathLike | None) -> bool:
    """Whether a --model argument names the built-in model (by name or by its directory)."""
    if model is None or (isinstance(model, str) and model == BUILTIN_NAME):
        return True
    try:
        return Path(model).resolve() == BUILTIN_DIR
    except OSError:
        return False


def resolve_model(model: str | os.PathLike | None) -> str | os.PathLike:
    """None or "nano" -> the built-in model's directory; anything else -> returned as given (a path).

    Raises FileNotFoundError (one line: the problem and the fix) when the built-in is asked for and its
    weights are not in this installation. A local folder that happens to be called nano is `./nano`.
    """
    if model is not None and not (isinstance(model, str) and model == BUILTIN_NAME):
        return model
    weights = BUILTIN_DIR / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"the built-in model '{BUILTIN_NAME}' is not installed ({weights} is missing: this copy of "
            "codegemma was built without its weights); pass a model directory instead, --model DIR or "
            "codegemma.load(DIR) (a Hugging Face download, or one made by `codegemma init`)")
    return BUILTIN_DIR
