"""OpenAI-compatible routes: POST /v1/completions (with `suffix` = FIM), /v1/chat/completions (also
bare /chat/completions, as llama.cpp serves it), GET /v1/models and /models.

Shapes follow openai-python's `types/completion*.py` and `types/chat/*`; streams are SSE ending in
`data: [DONE]`; replies carry `system_fingerprint`, `usage.prompt_tokens_details.cached_tokens` and
llama.cpp's `timings`. The first streamed chat chunk is `{"role": "assistant", "content": null}`
and the last of each choice an empty delta with its finish_reason, as llama.cpp and OpenAI send.
llama.cpp's extensions are read here too: `n_predict` (wins over max_tokens; 0 only evaluates the
prompt into the cache: llama.vim's instruction warm-up), `top_k`, `min_p`, `repeat_penalty`,
`samplers`, `t_max_predict_ms`. A prompt that does not fit the context is refused with
exceed_context_size_error (n_prompt_tokens, n_ctx), except a rendered FIM prompt, which is cut.
Any model name is accepted. Choices: `index = prompt_index * n + j`; with a seed, choice j uses seed + j.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma import __version__
from codegemma.serve import logprobs
from codegemma.serve.backend import Backend
from codegemma.serve.errors import OPENAI, APIError
from codegemma.serve.limits import Int64Seed
from codegemma.serve.protocol import (SSE_DONE, finish_reason, logit_bias, merge, prompt_progress, refuse_structured,
                                      route, run_all, sse, stream_response, timings)

MAX_CHOICES = 16  # n * prompts: each is an engine request


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def fingerprint(backend: Backend) -> str:
    """system_fingerprint: the server build and the model it serves ("b" first, as llama.cpp's)."""
    ident = f"{backend.model_dir or backend.model_name}:{backend.n_ctx}:{backend.fim_mode}"
    return f"b{__version__}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = None  # vLLM/llama.cpp extension; <= 0 (vLLM: -1): no cut
    min_p: float | None = Field(None, ge=0, le=1)  # llama.cpp extension
    repetition_penalty: float | None = Field(None, gt=0)  # vLLM extension
    repeat_penalty: float | None = Field(None, gt=0)  # llama.cpp's name for it
    presence_penalty: float | None = Field(None, ge=-2, le=2)  # accepted, not applied
    frequency_penalty: float | None = Field(None, ge=-2, le=2)  # accepted, not applied
    logit_bias: dict[str, Any] | list | None = None
    ignore_eos: bool = False  # llama.cpp and vLLM extension: the end-of-generation tokens are banned
    samplers: list[str] | None = None  # llama.cpp extension
    n_predict: int | None = Field(None, ge=-1)  # llama.cpp extension: wins over max_tokens
    t_max_predict_ms: int = Field(0, ge=0)  # llama.cpp extension
    verbose: bool = False  # llama.cpp extension: "__verbose" holds the prompt as the model saw it
    return_progress: bool = False  # llama.cpp extension: streamed prompt_progress chunks
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: Int64Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # refused: structured output needs a grammar sampler this server does not have
    response_format: dict[str, Any] | None = None
    json_schema: Any = None
    grammar: str | None = None

    def progress(self) -> bool:
        """return_progress applies to streams only (as in llama.cpp)."""
        return bool(self.stream) and self.return_progress

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def limit(self, *limits: int | None) -> int | None:
        """Tokens to generate: n_predict if given (llama.cpp), else the first limit set; None or -1: all."""
        for n in (self.n_predict, *limits):
            if n is not None:
                return None if n < 0 else n
        return None


class OpenAICompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)


class ContentPart(_Strict):
    type: str
    text: str | None = None


class OpenAIChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        if any(p.type != "text" for p in self.content):
            raise APIError(400, "only text content parts are supported by this model", "messages")
        return "".join(p.text or "" for p in self.content)


def chat_messages(messages: list[OpenAIChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text()} for m in messages]


class OpenAIChatRequest(_Sampling):
    messages: list[OpenAIChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # vLLM/transformers chat-template options (llama.cpp reads them too): a last assistant message is
    # continued by default (llama.cpp's assistant prefill); continue_final_message false closes it
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None

    def template_options(self) -> dict:
        if self.continue_final_message and self.add_generation_prompt:
            raise APIError(400, "add_generation_prompt and continue_final_message cannot both be true: "
                                "continue the last assistant message or open a new one, not both",
                           "continue_final_message")
        last_is_assistant = self.messages[-1].role in ("assistant", "model")
        if self.continue_final_message and not last_is_assistant:
            raise APIError(400, "continue_final_message needs the last message to be the assistant's",
                           "continue_final_message")
        return {"continue_final": self.continue_final_message is not False,
                "add_generation_prompt": self.add_generation_prompt is not False}


def usage(gens) -> dict:
    cs = [g.completion for g in gens if g.completion is not None]
    p = sum(c.prompt_tokens for c in cs)
    g = sum(c.completion_tokens for c in cs)
    return {"prompt_tokens": p, "completion_tokens": g, "total_tokens": p + g,
            "prompt_tokens_details": {"cached_tokens": sum(c.cached_tokens for c in cs)}}


def timings_of(gens) -> dict:
    g = gens[0]
    c = g.completion
    if c is None:
        return timings(g, len(g.prepared.ids), 0, 0)
    return timings(g, c.prompt_tokens - c.cached_tokens, c.cached_tokens, c.completion_tokens)


def build_router(backend: Backend) -> APIRouter:
    router = APIRouter()
    pieces = logprobs.Pieces(backend.tokenizer)
    stop_ids = backend.stop_ids
    system_fingerprint = fingerprint(backend)

    def sampling(req: _Sampling, prepared, j: int, n_logprobs: int, warm: bool):
        if warm:
            return backend.warm_params()
        seed = None if req.seed is None else req.seed + j
        return backend.sampling(
            prepared, temperature=1.0 if req.temperature is None else req.temperature, top_k=req.top_k or 0,
            top_p=1.0 if req.top_p is None else req.top_p, min_p=req.min_p or 0.0,
            repetition_penalty=req.repetition_penalty or req.repeat_penalty or 1.0, seed=seed, stop=req.stops(),
            max_time_ms=float(req.t_max_predict_ms) or None, logit_bias=logit_bias(
                req.logit_bias, backend.tokenizer, ban=stop_ids if req.ignore_eos else ()), samplers=req.samplers, logprobs=n_logprobs,
            names=None if req.repetition_penalty or not req.repeat_penalty else {"repetition_penalty": "repeat_penalty"})

    def verbose_of(req: _Sampling, gens) -> dict:
        """llama.cpp's `verbose`: the first result in its own (non-OpenAI) shape, with the exact prompt
        the server built (chat template, FIM layout, cuts), for a client to debug its requests."""
        if not req.verbose:
            return {}
        g = gens[0]
        c = g.completion
        return {"__verbose": {"content": g.text, "prompt": backend.tokenizer.decode(g.prepared.ids),
                              "tokens_predicted": c.completion_tokens if c else 0,
                              "tokens_evaluated": len(g.prepared.ids), "tokens_cached": c.cached_tokens if c else 0,
                              "truncated": g.prepared.truncated, "timings": timings_of(gens[:1])}}

    def token_items(items):
        return [t for t in items if t.token_id not in stop_ids]

    def prompts_of(req: OpenAICompletionRequest) -> list:
        p = req.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "'prompt' must not be an empty list", "prompt")
        if isinstance(p[0], int):
            return [p]
        return list(p)

    @route(router, "POST", ["/v1/completions"], OpenAICompletionRequest)
    async def completions(request: Request, req: OpenAICompletionRequest):
        refuse_structured(req)
        if req.best_of is not None and req.best_of != req.n:
            raise APIError(400, "best_of different from n is not supported; leave 'best_of' unset", "best_of")
        prompts = prompts_of(req)
        if len(prompts) * req.n > MAX_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is more than {MAX_CHOICES} choices", "n")
        if req.suffix is not None and any(not isinstance(p, str) for p in prompts):
            raise APIError(400, "'suffix' needs 'prompt' as text, not token ids", "suffix")
        limit = req.limit(req.max_tokens)
        warm = limit == 0  # n_predict 0 (llama.cpp): only evaluate the prompt into the cache
        n_lp = req.logprobs if req.logprobs is not None else 0
        model = req.model or backend.model_name
        prepared = []
        for p in prompts:  # tokenising a long prompt is done off the event loop
            if isinstance(p, list):
                job = partial(backend.token_prompt, p, cut=False)
            elif req.suffix is not None:  # FIM: prompt is the text before the cursor
                job = partial(backend.fim_prompt, p, req.suffix)
            else:
                job = partial(backend.text_prompt, p, cut=False)
            prepared.append(await asyncio.to_thread(job, max_new_tokens=limit))
        echoes = [p if isinstance(p, str) else backend.tokenizer.decode(p) for p in prompts]
        gens = backend.start_all([(pp, sampling(req, pp, j, max(n_lp, 1) if req.logprobs is not None else 0, warm))
                                  for pp in prepared for j in range(req.n)], progress=req.progress())
        cid, created = new_id("cmpl"), int(time.time())

        def base(choices):
            return {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "system_fingerprint": system_fingerprint, "choices": choices}

        def lp(items, offset: int):
            return logprobs.openai_completion(token_items(items), pieces, n_lp, offset) \
                if req.logprobs is not None else None

        if not req.stream:
            await run_all(gens, request)
            choices = []
            for i, g in enumerate(gens):
                echo = echoes[i // req.n] if req.echo else ""
                choices.append({"index": i, "text": echo + g.text,
                                "logprobs": lp(getattr(g.completion, "logprobs", None) or [], len(echo)),
                                "finish_reason": finish_reason(g.completion)})
            return JSONResponse({**base(choices), "usage": usage(gens), "timings": timings_of(gens),
                                 **verbose_of(req, gens)})

        async def events():
            offsets = [len(echoes[i // req.n]) if req.echo else 0 for i in range(len(gens))]
            if req.echo:
                for i in range(len(gens)):
                    yield sse(base([{"index": i, "text": echoes[i // req.n], "logprobs": None, "finish_reason": None}]))
            async for i, delta in merge(gens):
                if delta is not None and delta.progress is not None:
                    yield sse({**base([]), "prompt_progress": prompt_progress(delta.progress)})
                elif delta is None:
                    yield sse(base([{"index": i, "text": "", "logprobs": None,
                                     "finish_reason": finish_reason(gens[i].completion)}]))
                elif delta.text or (req.logprobs is not None and token_items(delta.logprobs)):
                    yield sse(base([{"index": i, "text": delta.text, "logprobs": lp(delta.logprobs, offsets[i]),
                                     "finish_reason": None}]))
                    offsets[i] += len(delta.text)
            if req.stream_options and req.stream_options.include_usage:
                yield sse({**base([]), "usage": usage(gens), "timings": timings_of(gens)})

        return stream_response(events(), gens, OPENAI, done=SSE_DONE)

    @route(router, "POST", ["/v1/chat/completions", "/chat/completions"], OpenAIChatRequest)
    async def chat_completions(request: Request, req: OpenAIChatRequest):
        refuse_structured(req)
        limit = req.limit(req.max_completion_tokens, req.max_tokens)
        warm = limit == 0  # llama.vim's instruction warm-up (n_predict 0): cache the conversation only
        n_lp = (req.top_logprobs or 0) if req.logprobs else 0
        prepared = await asyncio.to_thread(backend.chat_prompt, chat_messages(req.messages), max_new_tokens=limit,
                                           **req.template_options())
        model = req.model or backend.model_name
        gens = backend.start_all([(prepared, sampling(req, prepared, j, max(n_lp, 1) if req.logprobs else 0, warm))
                                  for j in range(req.n)], progress=req.progress())
        cid, created = new_id("chatcmpl"), int(time.time())

        def lp(items):
            return logprobs.openai_chat(token_items(items), pieces, n_lp) if req.logprobs else None

        def envelope(obj: str, choices, **extra) -> dict:
            return {"id": cid, "object": obj, "created": created, "model": model,
                    "system_fingerprint": system_fingerprint, "choices": choices, **extra}

        if not req.stream:
            await run_all(gens, request)
            choices = [{"index": i, "message": {"role": "assistant", "content": g.text},
                        "logprobs": lp(getattr(g.completion, "logprobs", None) or []),
                        "finish_reason": finish_reason(g.completion)} for i, g in enumerate(gens)]
            return JSONResponse(envelope("chat.completion", choices, usage=usage(gens), timings=timings_of(gens),
                                         **verbose_of(req, gens)))

        def chunk(choices, **extra) -> str:
            return sse(envelope("chat.completion.chunk", choices, **extra))

        async def events():
            for i in range(len(gens)):
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": None}, "logprobs": None,
                              "finish_reason": None}])
            async for i, delta in merge(gens):
                if delta is not None and delta.progress is not None:
                    yield chunk([], prompt_progress=prompt_progress(delta.progress))
                elif delta is None:
                    yield chunk([{"index": i, "delta": {}, "logprobs": None,
                                  "finish_reason": finish_reason(gens[i].completion)}])
                elif delta.text or (req.logprobs and token_items(delta.logprobs)):
                    yield chunk([{"index": i, "delta": {"content": delta.text}, "logprobs": lp(delta.logprobs),
                                  "finish_reason": None}])
            if req.stream_options and req.stream_options.include_usage:
                yield chunk([], usage=usage(gens), timings=timings_of(gens))

        return stream_response(events(), gens, OPENAI, done=SSE_DONE)

    def model_card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": backend.created, "owned_by": "codegemma",
                "aliases": backend.aliases, "tags": backend.tags, "meta": {"n_ctx_train": getattr(backend.config, "max_position_embeddings", backend.n_ctx),
                         "n_vocab": backend.tokenizer.vocab_size, "n_ctx": backend.n_ctx}}

    @route(router, "GET", ["/v1/models", "/models"])
    async def models(request: Request):
        return {"object": "list", "data": [model_card(backend.model_name)]}

    @router.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        return model_card(model_id)

    return router
