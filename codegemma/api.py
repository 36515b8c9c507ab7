"""The Python API: `codegemma.load(path)` -> a CodeGemma with generate / complete / chat.

`codegemma.load()` (or `load("nano")`) loads the built-in model, codegemma-nano.

Everything runs through the one Engine (codegemma.infer.engine); this module only turns Python
calls into prompts and SamplingParams.

    import codegemma
    cg = codegemma.load("path/to/codegemma-2b", device="cuda")
    cg.generate("def fib(n):", max_new_tokens=64)
    cg.complete("def add(a, b):\\n    ", "\\n\\nprint(add(1, 2))\\n", path="add.py")
    cg.chat([{"role": "user", "content": "Write a quicksort in Python."}])
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Sequence

from codegemma.infer.sampling import SamplingParams

class CodeGemma:
    """A loaded model with its tokenizer and engine. Use as a context manager or call close()."""

    def __init__(self, model, tokenizer, config, engine):
        self.model, self.tokenizer, self.config, self.engine = model, tokenizer, config, engine

    # ---- plain continuation ------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] = (), stream: bool = False, max_time_ms: float | None = None):
        """str -> str; list of str -> list of str; stream=True (one prompt) -> iterator of text deltas.

        A prompt is raw text: special-token texts in it (`<|fim_prefix|>`, `<start_of_turn>`, ...)
        become control tokens, and `<bos>` is prepended unless the text starts with it.
        """
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                                stop=tuple(stop), max_time_ms=max_time_ms)
        if stream:
            if not isinstance(prompt, str):
                raise ValueError("stream=True takes one prompt (a str), not a list")
            return self._stream(prompt, params)
        if isinstance(prompt, str):
            return self.engine.submit(prompt, params, block=True).result().text
        return [c.text for c in self.engine.generate(list(prompt), params)]

    def _stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        handle = self.engine.submit(prompt, params, block=True)
        try:
            for event in handle.events():
                if event.text:
                    yield event.text
        finally:
            if not handle.done:  # the caller stopped iterating early: free the slot
                handle.cancel()

    # ---- fill in the middle ------------------------------------------------------------------
    def fim_prompt(self, prefix: str, suffix: str = "", mode: str = "psm", path: str | None = None,
                   context: Sequence[tuple[str, str]] = ()) -> str:
        from codegemma.fim.format import render_fim

        self.tokenizer.require_fim()
        return render_fim(prefix, suffix, mode=mode, path=path, context=tuple(context))

    def complete(self, prefix: str, suffix: str = "", mode: str = "psm", path: str | None = None,
                 context: Sequence[tuple[str, str]] = (), stream: bool = False, **sampling):
        """The code between `prefix` and `suffix` (stops at FIM sentinels, file separator and eos).

        context: other files as (path, text) pairs, placed before the current file.
        """
        return self.generate(self.fim_prompt(prefix, suffix, mode, path, context), stream=stream, **sampling)

    # ---- chat (instruction-tuned models) -----------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, str]] | str, stream: bool = False, **sampling):
        """One model turn for a conversation [{"role": "user"|"assistant", "content": ...}, ...]."""
        from codegemma.fim.format import render_chat

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.generate(render_chat(messages, add_generation_prompt=True), stream=stream, **sampling)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "CodeGemma":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        return (f"CodeGemma({c.num_parameters() / 1e9:.2f}B params, layers={c.num_hidden_layers}, "
                f"device={self.engine.device}, max_seq_len={self.engine.max_seq_len})")


def load(path: str | os.PathLike | None = None, device=None, dtype=None, *, max_slots: int = 8,
         max_seq_len: int | None = None, compile: bool | str | None = None, quantize: str | None = None,
         group_size: int = 128, **engine_options) -> CodeGemma:
    """Load a model directory (Hugging Face format: config.json, *.safetensors, tokenizer.json).

    `path` None or "nano" loads codegemma-nano, the built-in model (codegemma/models/nano).
    `quantize`: None (the dtype's weights), "int8" (per output channel) or "int4" (groups of
    `group_size` inputs: 32, 64, 128 or 256), weight-only, applied as the weights are read
    (codegemma/infer/quantize.py; docs/inference.md). `engine_options` go to the Engine (e.g.
    max_queue, warmup, speculate)."""
    from codegemma.infer.quantize import check_mode
    from codegemma.models import resolve_model

    check_mode(quantize, group_size)  # before any loading
    path = resolve_model(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: model directory not found; pass a directory with config.json, "
                                "model weights and tokenizer.json")
    from codegemma.infer.engine import Engine
    from codegemma.model.checkpoint import load_model
    from codegemma.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(path)
    model, config = load_model(path, device=device, dtype=dtype)
    if quantize is not None:
        from codegemma.infer.quantize import quantize_model

        quantize_model(model, quantize, group_size)
    engine = Engine(model, tokenizer, max_slots=max_slots, max_seq_len=max_seq_len, compile=compile,
                    **engine_options)
    return CodeGemma(model, tokenizer, config, engine)
