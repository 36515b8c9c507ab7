"""llama.cpp's server API (its tools/server/README.md): POST /infill, /completion (alias /completions),
as llama.vim and llama.vscode call them. /tokenize, /detokenize, /apply-template, /props and /slots
are in llamacpp_info.py.

- /infill: `input_prefix`, `input_suffix`, `input_extra` [{filename, text}] rendered as CodeGemma
  multi-file context, and `prompt` placed after <|fim_middle|> (the text typed on the cursor's line;
  the reply continues after it). Too much context is cut around the cursor, as llama.cpp does.
  `fim_mode` ("psm" | "spm", this server's extension) overrides the server's --fim-mode.
- /completion: `prompt` as text, token ids, mixed ids and texts, {"prompt_string"}, or a list of
  prompts (the reply is then a list). A rendered FIM prompt is cut like /infill; any other prompt
  that does not fit is refused with exceed_context_size_error (n_prompt_tokens, n_ctx), as llama.cpp.
- `n_predict: 0` only evaluates the prompt into the prefix cache (the editors' warm-ups).
- `t_max_predict_ms` (the engine stops on time only right after a newline), `n_indent`, `n_cmpl`,
  `n_probs` (+ `post_sampling_probs`), `logit_bias`, `samplers`, `return_tokens`, `response_fields`
  ("timings/prompt_n" comes back under that literal key).
- SSE as llama.cpp sends it: `data: {"content", "tokens", "stop": false}` events, a last `stop: true`
  event with the settings, timings and `has_new_line` of the whole output, and no `[DONE]`.
- `grammar`, `json_schema` and `response_format` are refused (400): there is no constrained sampling.
- Any `model` is accepted; `cache_prompt` is accepted and always on (the engine reuses prefixes);
  `id_slot` is accepted and the engine picks the slot with the longest shared prefix.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.fim.format import MODES
from codegemma.serve import logprobs
from codegemma.serve.backend import Backend, Generation
from codegemma.serve.errors import LLAMACPP, APIError
from codegemma.serve.limits import LlamaSeed
from codegemma.serve.protocol import (generated_ids, logit_bias, merge, prompt_progress, refuse_structured, route,
                                      run_all, sse, stream_response, timings)

MAX_ALTERNATIVES = 8  # n_cmpl
MAX_PROMPTS = 16  # prompts in one /completion request
MAX_PROBS = 20  # n_probs


# The engine's field names as llama.cpp's server calls them (for the 400s that name a field).
LLAMACPP_NAMES = {"repetition_penalty": "repeat_penalty", "max_time_ms": "t_max_predict_ms", "logprobs": "n_probs",
                  "max_new_tokens": "n_predict"}

class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class LlamaParams(_Strict):
    n_predict: int = Field(-1, ge=-1)  # -1: until the context is full; 0: only cache the prompt
    temperature: float = 0.8  # llama.cpp's defaults; <= 0 is greedy
    top_k: int = 40  # <= 0: no cut (llama.cpp)
    top_p: float = Field(0.95, ge=0, le=1)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0)
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    seed: LlamaSeed = -1  # -1: random; else a uint32, as llama.cpp
    cache_prompt: bool = True
    n_indent: int = Field(0, ge=0)
    t_max_predict_ms: int = Field(0, ge=0)  # 0: no time limit
    n_cmpl: int = Field(1, ge=1, le=MAX_ALTERNATIVES)
    n_probs: int = Field(0, ge=0, le=MAX_PROBS)
    post_sampling_probs: bool = False
    return_tokens: bool = False
    logit_bias: list | dict | None = None
    ignore_eos: bool = False  # ban the end-of-generation tokens (llama.cpp: logit_bias -inf on each)
    return_progress: bool = False  # streamed prompt_progress events while the prompt is processed
    samplers: list[str] | None = None
    response_fields: list[str] | None = None
    id_slot: int = -1
    model: str | None = None
    # refused: structured output needs a grammar sampler this server does not have
    grammar: str | None = None
    json_schema: Any = None
    response_format: Any = None


class PromptObject(_Strict):
    prompt_string: str
    multimodal_data: list[str] | None = None


_PromptPart = int | str | PromptObject | list[int | str]


class LlamaCompletionRequest(LlamaParams):
    prompt: str | PromptObject | list[_PromptPart]


class ExtraChunk(_Strict):
    filename: str = "untitled"
    text: str


class LlamaInfillRequest(LlamaParams):
    input_prefix: str
    input_suffix: str
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    prompt: str = ""
    fim_mode: Literal[MODES] | None = None  # this server's extension: the FIM order of this request


class IndentGuard:
    """llama.cpp's `n_indent`: once a generated line (after the first) starts with fewer than `n`
    spaces/tabs, the text is cut right after that line's indentation and generation stops.
    Whitespace whose line is not yet known to pass is held back from the stream."""

    def __init__(self, n: int):
        self.n = n
        self.text = ""
        self.sent = 0
        self.scan = 0  # where to look for the next newline to check
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Append generated text; returns the part that is safe to send now."""
        self.text += delta
        hold = len(self.text)
        if self.n > 0:
            while True:
                nl = self.text.find("\n", self.scan)
                if nl < 0:
                    break
                pos = nl + 1
                while pos < len(self.text) and self.text[pos] in " \t":
                    pos += 1
                if pos >= len(self.text):
                    hold = nl + 1  # this line's indentation is not known yet
                    break
                if pos - nl - 1 < self.n:
                    self.text, self.stopped = self.text[:pos], True
                    hold = pos
                    break
                self.scan = pos
        out, self.sent = self.text[self.sent:hold], max(self.sent, hold)
        return out

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def nested_fields(paths: list[str], obj: dict) -> dict:
    """llama.cpp's response_fields: keep only these "a/b" paths, under their literal path keys."""
    out = {}
    for path in paths:
        value, found = obj, True
        for key in path.split("/"):
            if isinstance(value, dict) and key in value:
                value = value[key]
            else:
                found = False
                break
        if found and path:
            out[path] = value
    return out


def build_router(backend: Backend) -> APIRouter:
    router = APIRouter()
    pieces = logprobs.Pieces(backend.tokenizer)
    stop_ids = backend.stop_ids

    def temperature(req: LlamaParams) -> float:
        if "temperature" in req.model_fields_set or backend.default_temperature is None:
            return req.temperature
        return backend.default_temperature

    def seed(req: LlamaParams) -> int:
        if "seed" in req.model_fields_set or backend.default_seed is None:
            return req.seed
        return backend.default_seed

    def settings(req: LlamaParams, prepared) -> dict:
        limit = backend.predict_limit(req.n_predict)
        return {"n_predict": -1 if limit is None else limit, "temperature": temperature(req), "top_k": req.top_k,
                "top_p": req.top_p, "min_p": req.min_p, "repeat_penalty": req.repeat_penalty, "seed": seed(req),
                "stop": req.stop, "n_indent": req.n_indent, "t_max_predict_ms": req.t_max_predict_ms,
                "n_probs": req.n_probs, "post_sampling_probs": req.post_sampling_probs,
                "samplers": req.samplers if req.samplers is not None else list(DEFAULT_SAMPLERS),
                # as llama.cpp reports them: {bias, token}, a ban (-inf) as null, ignore_eos's bans included
                "logit_bias": [{"bias": None if b == -math.inf else b, "token": t} for t, b in biases(req)],
                "ignore_eos": req.ignore_eos, "n_ctx": prepared.n_ctx, "cache_prompt": req.cache_prompt,
                "stream": req.stream, "model": req.model or backend.model_name}

    def biases(req: LlamaParams) -> tuple[tuple[int, float], ...]:
        return logit_bias(req.logit_bias, backend.tokenizer, ban=stop_ids if req.ignore_eos else ())

    def sampling(req: LlamaParams, prepared, j: int):
        base = seed(req)
        return backend.sampling(prepared, temperature=temperature(req), top_k=req.top_k, top_p=req.top_p,
                                min_p=req.min_p, repetition_penalty=req.repeat_penalty,
                                seed=None if base < 0 else base + j, stop=req.stop,
                                max_time_ms=float(req.t_max_predict_ms) or None,
                                logit_bias=biases(req), samplers=req.samplers,
                                logprobs=req.n_probs, names=LLAMACPP_NAMES)

    def probs(req: LlamaParams, items) -> list[dict]:
        items = [t for t in items if t.token_id not in stop_ids]
        return logprobs.llamacpp(items, pieces, req.n_probs, req.post_sampling_probs)

    def stop_type(req: LlamaParams, g: Generation | None) -> tuple[str, str]:
        c = g.completion if g is not None else None
        if c is None or g.cut_by_guard or c.finish_reason in ("length", "time"):
            return "limit", ""
        if c.finish_reason == "cancelled":
            return "none", ""
        if c.stop_token_id is None and c.stop_text and c.stop_text in req.stop:
            return "word", c.stop_text
        return "eos", ""

    def final(req: LlamaParams, prepared, g: Generation | None, index: int, content: str, *,
              whole: str, streamed: bool) -> dict:
        """The last (or only) reply object; `whole` is the whole output (has_new_line)."""
        c = g.completion if g is not None else None
        kind, word = stop_type(req, g)
        prompt_tokens = c.prompt_tokens if c is not None else len(prepared.ids)
        cached = c.cached_tokens if c is not None else 0
        generated = c.completion_tokens if c is not None else 0
        want = req.response_fields
        obj = {"index": index, "content": content,
               "tokens": generated_ids(c) if req.return_tokens and not streamed else [],
               "id_slot": -1, "stop": True, "model": req.model or backend.model_name,
               "tokens_predicted": generated, "tokens_evaluated": prompt_tokens,
               "generation_settings": settings(req, prepared),
               "prompt": backend.tokenizer.decode(prepared.ids) if not want or "prompt" in want else "",
               "has_new_line": "\n" in whole, "truncated": prepared.truncated, "stop_type": kind,
               "stopping_word": word, "tokens_cached": cached,
               "timings": timings(g, prompt_tokens - cached, cached, generated)}
        if req.n_probs and not streamed and c is not None:
            obj["completion_probabilities"] = probs(req, getattr(
                c, "probs" if req.post_sampling_probs else "logprobs", None) or [])
        return nested_fields(want, obj) if want else obj

    async def serve(request: Request, req: LlamaParams, prompts: list):
        """Run every prompt n_cmpl times; one object, or a list when there are several."""
        refuse_structured(req)
        if req.stream and len(prompts) * req.n_cmpl > 1:
            raise APIError(400, "several prompts or n_cmpl > 1 cannot be streamed; send stream: false", "stream")
        warm = req.n_predict == 0  # warm-up: put the prompt into the prefix cache, generate nothing
        jobs = [(p, backend.warm_params() if warm else sampling(req, p, j)) for p in prompts for j in range(req.n_cmpl)]
        guard = (lambda: IndentGuard(req.n_indent)) if req.n_indent > 0 and not warm else None
        gens = backend.start_all(jobs, guard, progress=req.stream and req.return_progress)
        if not req.stream:
            await run_all(gens, request)
            results = [final(req, g.prepared, g, i, g.text, whole=g.text, streamed=False)
                       for i, g in enumerate(gens)]
            return JSONResponse(results if len(results) > 1 else results[0])
        g = gens[0]

        async def events():
            whole, n = "", 0
            async for _, delta in merge(gens):
                if delta is None:
                    break
                if delta.progress is not None:
                    yield sse({"index": 0, "content": "", "tokens": [], "stop": False, "id_slot": -1,
                               "tokens_predicted": 0, "tokens_evaluated": len(g.prepared.ids),
                               "prompt_progress": prompt_progress(delta.progress)})
                    continue
                whole += delta.text
                n += len(delta.token_ids)
                if not delta.text and not delta.token_ids:
                    continue
                event = {"index": 0, "content": delta.text, "tokens": [t for t in delta.token_ids if t not in stop_ids],
                         "stop": False, "id_slot": -1, "tokens_predicted": n, "tokens_evaluated": len(g.prepared.ids)}
                if req.n_probs:
                    event["completion_probabilities"] = probs(req, delta.probs if req.post_sampling_probs
                                                              else delta.logprobs)
                if event["tokens"] or event["content"] or event.get("completion_probabilities"):
                    yield sse(event)
            yield sse(final(req, g.prepared, g, 0, "", whole=whole, streamed=True))

        return stream_response(events(), gens, LLAMACPP)

    @route(router, "POST", ["/infill"], LlamaInfillRequest)
    async def infill(request: Request, req: LlamaInfillRequest):
        context = [(e.filename, e.text) for e in req.input_extra]
        prepared = await asyncio.to_thread(
            backend.fim_prompt, req.input_prefix, req.input_suffix, context=context, middle=req.prompt,
            mode=req.fim_mode, max_new_tokens=None if req.n_predict < 0 else req.n_predict)
        return await serve(request, req, [prepared])

    @route(router, "POST", ["/completion", "/completions"], LlamaCompletionRequest)
    async def completion(request: Request, req: LlamaCompletionRequest):
        limit = None if req.n_predict < 0 else req.n_predict
        prompts = []
        for p in split_prompts(req.prompt):
            prompts.append(await asyncio.to_thread(_prepare, backend, p, limit))
        return await serve(request, req, prompts)

    return router


# llama.cpp's default sampler chain, reported in generation_settings when a request names none
DEFAULT_SAMPLERS = ("penalties", "top_k", "top_p", "min_p", "temperature")


def split_prompts(prompt) -> list:
    """llama.cpp's prompt shapes as a list of prompts, each a text, an id list or a mixed list:
    a list of texts (or with nested lists / objects) is several prompts; a flat list holding ids is one."""
    if isinstance(prompt, (str, PromptObject)):
        prompts = [prompt]
    elif not prompt:
        raise APIError(400, "'prompt' must not be empty", "prompt")
    elif all(isinstance(p, str) for p in prompt) or any(isinstance(p, (list, PromptObject)) for p in prompt):
        prompts = list(prompt)
    else:
        prompts = [prompt]
    if len(prompts) > MAX_PROMPTS:
        raise APIError(400, f"'prompt' holds {len(prompts)} prompts; at most {MAX_PROMPTS} are allowed", "prompt")
    for p in prompts:
        if isinstance(p, int) or isinstance(p, list) and any(isinstance(x, PromptObject) for x in p):
            raise APIError(400, "'prompt': a list of prompts holds texts, token lists or objects", "prompt")
    return prompts


def _prepare(backend: Backend, p, limit: int | None):
    if isinstance(p, PromptObject):
        if p.multimodal_data:
            raise APIError(400, "multimodal_data is not supported: this model reads text only", "prompt")
        p = p.prompt_string
    if isinstance(p, str):
        if not p:
            raise APIError(400, "'prompt' must not be empty", "prompt")
        return backend.text_prompt(p, max_new_tokens=limit, cut=False)
    if all(isinstance(x, int) for x in p):
        return backend.token_prompt(p, max_new_tokens=limit, cut=False)
    # ids and texts mixed: texts are tokenized (special-token texts as control tokens); <bos> first
    # when the sequence starts with a text, as llama.cpp does
    tok = backend.tokenizer
    ids = [tok.bos_id] if isinstance(p[0], str) else []
    for x in p:
        ids.extend([x] if isinstance(x, int) else tok.encode(x))
    return backend.token_prompt(ids, max_new_tokens=limit, cut=False)
