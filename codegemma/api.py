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

import logging
import os
from typing import Iterator, Mapping, Sequence

from codegemma.infer.sampling import SamplingParams

log = logging.getLogger("codegemma")


class CodeGemma:
    """A loaded model with its tokenizer, prompt builder and engine. Use as a context manager or
    call close().

    `prompts` (a codegemma.fim.prompt.PromptBuilder) is the one place prompts are built: the
    methods below fit every prompt into the context as the server does (a long file is cut around
    the cursor, never refused) and log a warning saying what they cut (logger "codegemma"); `run`
    takes prompts built by it directly.
    """

    def __init__(self, model, tokenizer, config, engine, fim_mode: str = "psm"):
        from codegemma.fim.prompt import PromptBuilder

        self.model, self.tokenizer, self.config, self.engine = model, tokenizer, config, engine
        self.prompts = PromptBuilder(tokenizer, engine.max_seq_len, fim_mode)

    # ---- running built prompts -------------------------------------------------------------------
    def run(self, prompt, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
            top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
            stop: Sequence[str] = (), stream: bool = False, max_time_ms: float | None = None):
        """Generate for a Prompt (-> str), a list of Prompts (-> list of str, batched) or, with
        stream=True, one Prompt (-> iterator of text deltas). `max_new_tokens` is capped by each
        prompt's own limit (what fits its context)."""
        one = not isinstance(prompt, (list, tuple))
        prompts = [prompt] if one else list(prompt)

        def params(p) -> SamplingParams:
            return SamplingParams(max_new_tokens=min(max_new_tokens, p.max_new_tokens), temperature=temperature,
                                  top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                                  stop=tuple(stop), max_time_ms=max_time_ms)
        if stream:
            if not one:
                raise ValueError("stream=True takes one prompt, not a list")
            return self._stream(prompt.ids, params(prompt))
        handles = [self.engine.submit(p.ids, params(p), block=True) for p in prompts]
        texts = [h.result().text for h in handles]
        return texts[0] if one else texts

    @staticmethod
    def _note_cuts(prompts) -> None:
        for p in prompts:
            if p.truncated:
                log.warning("prompt cut to fit the %d-token context: %s", p.n_ctx, p.cut.describe())

    def _stream(self, ids: list[int], params: SamplingParams) -> Iterator[str]:
        handle = self.engine.submit(ids, params, block=True)
        try:
            for event in handle.events():
                if event.text:
                    yield event.text
        finally:
            if not handle.done:  # the caller stopped iterating early: free the slot
                handle.cancel()

    # ---- plain continuation ------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], max_new_tokens: int = 128, **sampling):
        """str -> str; list of str -> list of str; stream=True (one prompt) -> iterator of text deltas.

        A prompt is raw text: special-token texts in it (`<|fim_prefix|>`, `<start_of_turn>`, ...)
        become control tokens, and `<bos>` is prepended unless the text starts with it. A prompt
        longer than the context keeps its end (a pre-rendered FIM prompt is cut around the cursor).
        Sampling: temperature (0 = greedy), top_k, top_p, repetition_penalty, seed, stop, max_time_ms.
        """
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        built = [self.prompts.text(t, max_new_tokens=max_new_tokens) for t in texts]
        self._note_cuts(built)
        return self.run(built[0] if isinstance(prompt, str) else built, max_new_tokens=max_new_tokens, **sampling)

    # ---- fill in the middle ------------------------------------------------------------------
    def fim_prompt(self, prefix: str, suffix: str = "", mode: str | None = None, path: str | None = None,
                   context: Sequence[tuple[str, str]] = (), repo: str | os.PathLike | None = None,
                   max_new_tokens: int = 128):
        """The Prompt `complete` runs (ids, limits, what was cut); `prompts.render(p)` shows its text.

        repo: a directory (say the repository's root) that `path` is relative to; when the file
        lies in a git repository, the files it depends on come first as context, nearest
        dependencies first within the room the current file leaves, in the order training packs
        a repository (codegemma.repo), and the path line becomes its path in the repository;
        `context` files come after them, nearest the cursor."""
        return self.prompts.fim(prefix, suffix, path=None if path is None else str(path),
                                context=tuple(context), mode=mode, repo=repo, max_new_tokens=max_new_tokens)

    def complete(self, prefix: str, suffix: str = "", mode: str | None = None, path: str | None = None,
                 context: Sequence[tuple[str, str]] = (), repo: str | os.PathLike | None = None,
                 stream: bool = False, max_new_tokens: int = 128, **sampling):
        """The code between `prefix` and `suffix` (stops at FIM sentinels, file separator and eos).

        mode: "psm" or "spm" (default: the one given to load()). path: the current file's path line.
        context: other files as (path, text) pairs, placed before the current file. repo: see
        fim_prompt."""
        prompt = self.fim_prompt(prefix, suffix, mode, path, context, repo, max_new_tokens)
        self._note_cuts([prompt])
        return self.run(prompt, stream=stream, max_new_tokens=max_new_tokens, **sampling)

    # ---- chat (instruction-tuned models) -----------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, str]] | str, stream: bool = False,
             max_new_tokens: int = 128, **sampling):
        """One model turn for a conversation [{"role": "user"|"assistant"|"system", "content": ...}];
        a conversation that ends with an assistant message is continued from it (its text is not
        repeated in the answer)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        prompt = self.prompts.chat(messages, max_new_tokens=max_new_tokens)
        return self.run(prompt, stream=stream, max_new_tokens=max_new_tokens, **sampling)

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
         max_seq_len: int | None = None, decode: str = "auto", fim_mode: str = "psm",
         quantize: str | None = None, group_size: int = 128, allow_nonfinite: bool = False,
         **engine_options) -> CodeGemma:
    """Load a model directory (Hugging Face format: config.json, *.safetensors, tokenizer.json).

    `path` None or "nano" loads codegemma-nano, the built-in model (codegemma/models/nano).
    `decode`: "auto" (CUDA graphs on GPU, eager on CPU), "eager", "graphs" or "compile" (fastest
    per token after a minute of torch.compile). `fim_mode`: the FIM order `complete` uses by default.
    `quantize`: None (the dtype's weights), "int8" (per output channel) or "int4" (groups of
    `group_size` inputs: 32, 64, 128 or 256), weight-only, applied as the weights are read
    (codegemma/infer/quantize.py; docs/inference.md). Weights holding NaN/Inf are refused unless
    allow_nonfinite=True (then loaded with a warning). `engine_options` go to the Engine (e.g.
    max_queue, warmup, speculate)."""
    from codegemma.infer.quantize import check_mode
    from codegemma.models import resolve_model

    check_mode(quantize, group_size)  # before any loading
    path = resolve_model(path)
    from codegemma.infer.engine import Engine
    from codegemma.model.checkpoint import load_config, load_model
    from codegemma.tokenizer import Tokenizer

    load_config(path)  # a folder that is not a model is told so before its tokenizer is looked for
    tokenizer = Tokenizer.load(path)
    prepare = None
    if quantize is not None:  # each weight quantized as it is read: peak memory near the quantized size
        from codegemma.infer.quantize import quantizer

        prepare = quantizer(quantize, group_size)
    model, config = load_model(path, device=device, dtype=dtype, allow_nonfinite=allow_nonfinite, prepare=prepare)
    engine = Engine(model, tokenizer, max_slots=max_slots, max_seq_len=max_seq_len, decode=decode,
                    **engine_options)
    return CodeGemma(model, tokenizer, config, engine, fim_mode=fim_mode)
