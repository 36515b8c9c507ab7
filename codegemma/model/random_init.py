"""`codegemma init`: a randomly initialised model directory in Hugging Face format.

The directory holds config.json, generation_config.json, model.safetensors and a small byte-fallback
BPE tokenizer trained on the built-in snippets below, with Gemma's special-token ids, so that
transformers (AutoTokenizer + AutoModelForCausalLM) and codegemma both load it. The same preset and
seed give a byte-identical directory: it is the fixture that tests, CI and examples build on.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

# Deterministic training text for the small tokenizer: code shaped like what the model will see.
SAMPLE_CODE = '''\
def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_prime(n):
    if n < 2:
        return False
    for i in range(2, int(n ** 0.5) + 1):
        if n % i == 0:
            return False
    return True


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()

    def __len__(self):
        return len(self.items)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\\n") for line in f]


def word_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts


import json
import os


def load_config(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    print(fibonacci(10), is_prime(97))
    print(sorted(word_counts("the cat and the hat").items()))
'''

SAMPLE_TEXTS = (
    SAMPLE_CODE,
    "function add(a, b) {\n  return a + b;\n}\n\nconst total = [1, 2, 3].reduce(add, 0);\n",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello, world\\n\");\n    return 0;\n}\n",
    "Write a function that returns the sum of a list of numbers.\n",
)

LARGE_PARAMETERS = 100_000_000  # warn above this: fp32 init needs 4 bytes per parameter of RAM


def size_warning(preset: str, config) -> str | None:
    """A warning for presets that allocate billions of parameters, else None."""
    n = config.num_parameters()
    if n <= LARGE_PARAMETERS:
        return None
    gb = n * (2 if config.torch_dtype in ("bfloat16", "float16") else 4) / 1e9
    return (f"preset {preset!r} has {n:,} parameters: this allocates {gb:.1f} GB and writes as much "
            "to disk; the 'debug' preset is the one meant for tests")


def init_model_dir(preset: str, out_dir: str | os.PathLike, seed: int = 0, force: bool = False) -> Path:
    """Write a random `preset` model with a small tokenizer to out_dir; return the path."""
    import torch

    from codegemma.atomic import check_output_dir
    from codegemma.model.checkpoint import resolve_dtype, save_model
    from codegemma.model.config import get_preset
    from codegemma.model.transformer import Gemma
    from codegemma.tokenizer import save_tokenizer_files, train_bpe_tokenizer

    out = check_output_dir(out_dir, force)
    config = get_preset(preset)
    dtype = resolve_dtype(config.torch_dtype, torch.device("cpu"), config)
    note = size_warning(preset, config)
    if note:
        warnings.warn(note, stacklevel=2)

    tokenizer = train_bpe_tokenizer(SAMPLE_TEXTS, config.vocab_size)
    # Built on meta and materialised directly in the storage dtype: one copy of the weights.
    with torch.device("meta"):
        model = Gemma(config)
    model = model.to(dtype).to_empty(device="cpu")
    model.init_weights(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tok-", dir=out.parent) as tok_dir:
        save_tokenizer_files(tokenizer, tok_dir)
        return save_model(model, config, out, dtype=dtype, tokenizer_dir=tok_dir, force=force)
