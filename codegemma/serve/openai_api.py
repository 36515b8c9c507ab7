"""OpenAI-compatible routes: POST /v1/completions (with `suffix` = FIM), /v1/chat/completions, GET /v1/models.

Shapes follow openai-python's `types/completion*.py`; streams are SSE ending in `data: [DONE]`.
Any model name is accepted (one model is served; replies carry the name the client sent).
Choices: `index = prompt_index * n + j`; with a seed, choice j uses seed + j.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.serve.backend import Backend, ClientGone, guarded_stream, merge_deltas, new_id, run_all
from codegemma.serve.errors import OPENAI, APIError, error_body, parse_body

MAX_CHOICES = 16  # n * prompts: each is an engine request
MAX_STOPS = 16  # OpenAI allows 4; Continue sends the six CodeGemma stops


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)  # vLLM/llama.cpp extension
    repetition_penalty: float | None = Field(None, gt=0)  # vLLM extension
    presence_penalty: float | None = Field(None, ge=-2, le=2)  # accepted, not applied
    frequency_penalty: float | None = Field(None, ge=-2, le=2)  # accepted, not applied
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise APIError(400, f"'stop' has {len(stops)} entries; at most {MAX_STOPS} are allowed", "stop")
        return [s for s in stops if s]


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(_Strict):
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


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool | None = None


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(completions) -> dict:
    p = sum(c.prompt_tokens for c in completions if c is not None)
    g = sum(c.completion_tokens for c in completions if c is not None)
    return {"prompt_tokens": p, "completion_tokens": g, "total_tokens": p + g}


def _finish(c) -> str:
    # OpenAI knows stop | length (| content_filter): a time limit or a cancel reads as length/stop.
    return "length" if c is not None and c.finish_reason in ("length", "time") else "stop"


def build_router(backend: Backend) -> APIRouter:
    router = APIRouter()

    def sampling(req: _Sampling, prepared, j: int):
        seed = None if req.seed is None else req.seed + j
        temperature = 1.0 if req.temperature is None else req.temperature
        return backend.sampling(prepared, temperature=temperature, top_k=req.top_k or 0,
                                top_p=1.0 if req.top_p is None else req.top_p,
                                repetition_penalty=req.repetition_penalty or 1.0, seed=seed, stop=req.stops())

    def prompts_of(req: CompletionRequest) -> list:
        p = req.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "'prompt' must not be an empty list", "prompt")
        if isinstance(p[0], int):
            return [p]
        return list(p)

    @router.post("/v1/completions")
    async def completions(request: Request):
        req: CompletionRequest = await parse_body(request, CompletionRequest)
        if req.logprobs:
            raise APIError(400, "logprobs are not supported by this server; leave 'logprobs' unset", "logprobs")
        if req.best_of is not None and req.best_of != req.n:
            raise APIError(400, "best_of different from n is not supported; leave 'best_of' unset", "best_of")
        prompts = prompts_of(req)
        if len(prompts) * req.n > MAX_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is more than {MAX_CHOICES} choices", "n")
        if req.suffix is not None and any(not isinstance(p, str) for p in prompts):
            raise APIError(400, "'suffix' needs 'prompt' as text, not token ids", "suffix")
        model = req.model or backend.model_name
        prepared = []
        for p in prompts:  # tokenising a long prompt is done off the event loop
            if isinstance(p, list):
                job = partial(backend.token_prompt, p)
            elif req.suffix is not None:  # FIM: prompt is the text before the cursor
                job = partial(backend.fim_prompt, p, req.suffix)
            else:
                job = partial(backend.text_prompt, p)
            prepared.append(await asyncio.to_thread(job, max_new_tokens=req.max_tokens))
        echoes = [p if isinstance(p, str) else backend.tokenizer.decode(p) for p in prompts]
        gens = backend.start_all([(pp, sampling(req, pp, j)) for pp in prepared for j in range(req.n)])
        cid, created = new_id("cmpl"), int(time.time())

        def base(choices):
            return {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": choices}

        if not req.stream:
            try:
                results = await run_all(gens, request)
            except ClientGone:
                raise APIError(499, "client disconnected") from None
            choices = [{"index": i, "text": (echoes[i // req.n] if req.echo else "") + c.text,
                        "logprobs": None, "finish_reason": _finish(c)} for i, c in enumerate(results)]
            return JSONResponse({**base(choices), "usage": _usage(results)})

        async def events():
            try:
                if req.echo:
                    for i in range(len(gens)):
                        yield _sse(base([{"index": i, "text": echoes[i // req.n], "logprobs": None,
                                          "finish_reason": None}]))
                async for i, text in merge_deltas(gens):
                    if text is None:
                        c = gens[i].completion
                        yield _sse(base([{"index": i, "text": "", "logprobs": None, "finish_reason": _finish(c)}]))
                    else:
                        yield _sse(base([{"index": i, "text": text, "logprobs": None, "finish_reason": None}]))
                if req.stream_options and req.stream_options.include_usage:
                    yield _sse({**base([]), "usage": _usage([g.completion for g in gens])})
            except Exception as exc:  # mid-stream: the status is already 200, report in-band
                yield _sse(error_body(OPENAI, 500, f"generation failed: {exc}"))
            yield "data: [DONE]\n\n"

        return guarded_stream(events(), gens, "text/event-stream")

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req: ChatRequest = await parse_body(request, ChatRequest)
        if req.logprobs:
            raise APIError(400, "logprobs are not supported by this server", "logprobs")
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        prepared = await asyncio.to_thread(backend.chat_prompt, messages, max_new_tokens=limit)
        model = req.model or backend.model_name
        gens = backend.start_all([(prepared, sampling(req, prepared, j)) for j in range(req.n)])
        cid, created = new_id("chatcmpl"), int(time.time())

        if not req.stream:
            try:
                results = await run_all(gens, request)
            except ClientGone:
                raise APIError(499, "client disconnected") from None
            choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                        "logprobs": None, "finish_reason": _finish(c)} for i, c in enumerate(results)]
            return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                 "choices": choices, "usage": _usage(results)})

        def chunk(choices, **extra):
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": choices, **extra})

        async def events():
            try:
                for i in range(len(gens)):
                    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}])
                async for i, text in merge_deltas(gens):
                    if text is None:
                        yield chunk([{"index": i, "delta": {}, "logprobs": None,
                                      "finish_reason": _finish(gens[i].completion)}])
                    else:
                        yield chunk([{"index": i, "delta": {"content": text}, "logprobs": None,
                                      "finish_reason": None}])
                if req.stream_options and req.stream_options.include_usage:
                    yield chunk([], usage=_usage([g.completion for g in gens]))
            except Exception as exc:
                yield _sse(error_body(OPENAI, 500, f"generation failed: {exc}"))
            yield "data: [DONE]\n\n"

        return guarded_stream(events(), gens, "text/event-stream")

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": backend.model_name, "object": "model",
                                            "created": backend.created, "owned_by": "codegemma"}]}

    @router.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        return {"id": model_id, "object": "model", "created": backend.created, "owned_by": "codegemma"}

    return router
