"""Mistral's FIM API: POST /v1/fim/completions {model, prompt, suffix, max_tokens, min_tokens,
temperature, top_p, stop, random_seed, stream}, as Continue's Mistral provider (apiBase .../v1/)
and Tabby's `mistral/completion` call it.

`prompt` is the text before the cursor and `suffix` the text after it; the server renders the FIM
prompt in its --fim-mode and fits it into the context like /infill. Replies have Mistral's shapes: a
`chat.completion` whose choice holds `message: {role, content}`, or SSE `chat.completion.chunk`s whose
every delta carries `content` as a string (Tabby's parser requires it), the last one with the
finish_reason and the usage, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.serve.backend import Backend
from codegemma.serve.errors import OPENAI
from codegemma.serve.limits import Int64Seed
from codegemma.serve.openai_api import new_id, usage
from codegemma.serve.protocol import SSE_DONE, finish_reason, merge, refuse_structured, route, run_all, sse, stream_response


class MistralFIMRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    prompt: str
    suffix: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)  # accepted; the engine has no minimum length
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    random_seed: Int64Seed | None = None
    seed: Int64Seed | None = None  # the OpenAI-style name some clients send
    stream: bool = False
    response_format: dict | None = None  # refused, as everywhere


def build_router(backend: Backend) -> APIRouter:
    router = APIRouter()

    @route(router, "POST", ["/v1/fim/completions"], MistralFIMRequest)
    async def fim_completions(request: Request, req: MistralFIMRequest):
        refuse_structured(req, ("response_format",))
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        prepared = await asyncio.to_thread(backend.fim_prompt, req.prompt, req.suffix or "",
                                           max_new_tokens=req.max_tokens)
        seed = req.random_seed if req.random_seed is not None else req.seed
        # Mistral's default temperature for Codestral is 0.7 (0.0-0.7 recommended); top_p 1
        params = backend.sampling(prepared, temperature=0.7 if req.temperature is None else req.temperature,
                                  top_p=1.0 if req.top_p is None else req.top_p, seed=seed, stop=stops)
        gens = backend.start_all([(prepared, params)])
        model = req.model or backend.model_name
        cid, created = new_id("fim"), int(time.time())

        def envelope(obj: str, choices, **extra) -> dict:
            return {"id": cid, "object": obj, "created": created, "model": model, "choices": choices, **extra}

        if not req.stream:
            await run_all(gens, request)
            g = gens[0]
            choice = {"index": 0, "message": {"role": "assistant", "content": g.text, "tool_calls": None,
                                              "prefix": False}, "finish_reason": finish_reason(g.completion)}
            return JSONResponse(envelope("chat.completion", [choice], usage=usage(gens)))

        async def events():
            yield sse(envelope("chat.completion.chunk", [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                          "finish_reason": None}]))
            async for _, delta in merge(gens):
                if delta is None:
                    yield sse(envelope("chat.completion.chunk",
                                       [{"index": 0, "delta": {"content": ""},
                                         "finish_reason": finish_reason(gens[0].completion)}], usage=usage(gens)))
                elif delta.text:
                    yield sse(envelope("chat.completion.chunk", [{"index": 0, "delta": {"content": delta.text},
                                                                  "finish_reason": None}]))

        return stream_response(events(), gens, OPENAI, done=SSE_DONE)

    return router
