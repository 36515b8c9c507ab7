"""What the protocol routers share, written once: routes with their request models (and the
/openapi.json built from them), waiting for generations with disconnect polling and the 499 path,
interleaved streams, SSE and NDJSON framing with in-band errors, finish reasons, and the request
fields every API maps the same way (logit_bias, refused structured output).

Each router parses its API's request into prompts + SamplingParams (through the Backend), runs them
with `run_all` or `merge`, and renders the Completions / Deltas in its API's shape.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from codegemma.serve.backend import ClientGone, Delta, Generation
from codegemma.serve.errors import OLLAMA, APIError, error_body, parse_body

BODIES = "request_bodies"  # on a router: [(path, method, model)] of its routes that take a body


# ---- routes ------------------------------------------------------------------------------------------
def route(router: APIRouter, method: str, paths: Sequence[str], model: type[BaseModel] | None = None):
    """Register `fn` on every path. With a model, the body is parsed into it (any problem is a 400
    in the path's API shape) and `fn(request, body)` is called; the model is recorded for
    /openapi.json. Without one, `fn(request)`."""
    def decorate(fn: Callable):
        if model is None:
            async def endpoint(request: Request):
                return await fn(request)
        else:
            async def endpoint(request: Request):
                return await fn(request, await parse_body(request, model))
        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        for path in paths:
            router.add_api_route(path, endpoint, methods=[method], name=f"{fn.__name__} {path}")
            if model is not None:
                router.__dict__.setdefault(BODIES, []).append((path, method.lower(), model))
        return fn
    return decorate


def openapi_document(app, routers: Sequence[APIRouter], title: str, version: str) -> dict:
    """The OpenAPI 3.1 document of `app`, with each route's request model (from `routers`, the ones
    `app` includes) as its JSON body."""
    from fastapi.openapi.utils import get_openapi
    from pydantic.json_schema import models_json_schema

    doc = get_openapi(title=title, version=version, routes=app.routes)
    bodies = [body for router in routers for body in getattr(router, BODIES, [])]
    models = list(dict.fromkeys(model for _, _, model in bodies))
    refs, schemas = models_json_schema([(m, "validation") for m in models],
                                       ref_template="#/components/schemas/{model}")
    doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.get("$defs", {}))
    for path, method, model in bodies:
        op = doc["paths"][path][method]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[(model, "validation")]}}}
        op.setdefault("responses", {})["400"] = {"description": "invalid request (the error names the field)"}
    return doc


# ---- waiting and streaming -----------------------------------------------------------------------------
async def run_all(gens: list[Generation], request: Request | None) -> list:
    """Wait for every generation (n > 1 runs them side by side); if one fails or the client leaves
    (499), cancel the rest."""
    try:
        return list(await asyncio.gather(*(g.result(request) for g in gens)))
    except ClientGone:
        raise APIError(499, "client disconnected") from None
    finally:
        for g in gens:
            g.cancel()


async def merge(gens: list[Generation]) -> AsyncIterator[tuple[int, Delta | None]]:
    """Interleave several streams as (index, delta); (index, None) marks the end of one."""
    if len(gens) == 1:
        try:
            async for delta in gens[0].deltas():
                yield 0, delta
            yield 0, None
        finally:
            gens[0].cancel()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, g: Generation):
        try:
            async for delta in g.deltas():
                await queue.put((i, delta, None))
            await queue.put((i, None, None))
        except BaseException as exc:  # re-raised in the consumer below
            await queue.put((i, None, exc))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(gens)
        while remaining:
            i, delta, exc = await queue.get()
            if exc is not None:
                raise exc
            if delta is None:
                remaining -= 1
            yield i, delta
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gens:
            g.cancel()


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def ndjson(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def stream_response(body: AsyncIterator[str], gens: list[Generation], family: str, *, done: str = ""):
    """A streaming response (SSE, or NDJSON for Ollama) that reports a failure after the 200 in band,
    in `family`'s error shape, ends with `done` (OpenAI's [DONE]), and cancels `gens` however it ends
    (finished, client gone, or never started because the client left before the first byte)."""
    frame = ndjson if family == OLLAMA else sse

    async def guarded():
        try:
            async for chunk in body:
                yield chunk
        except Exception as exc:  # the status is already 200: report in band
            yield frame(error_body(family, 500, f"generation failed: {exc}"))
        if done:
            yield done

    class _Guarded(StreamingResponse):
        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                for g in gens:
                    g.cancel()

    media = "application/x-ndjson" if family == OLLAMA else "text/event-stream"
    return _Guarded(guarded(), media_type=media, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- results ---------------------------------------------------------------------------------------------
def finish_reason(c) -> str:
    """OpenAI's, Ollama's and Mistral's: "length" when the token or time limit ended it, else "stop"."""
    return "length" if c is not None and c.finish_reason in ("length", "time") else "stop"


def generated_ids(c) -> list[int]:
    """The ids of the text (without the stop token that ended it), as llama.cpp's `tokens`."""
    if c is None:
        return []
    ids = list(c.token_ids)
    return ids[:-1] if ids and c.stop_token_id is not None and ids[-1] == c.stop_token_id else ids


def prompt_progress(p) -> dict:
    """llama.cpp's `prompt_progress` object (return_progress) from an engine PromptProgress."""
    return {"total": p.total, "cache": p.cache, "processed": p.processed, "time_ms": p.time_ms}


def timings(g: Generation | None, prompt_n: int, cache_n: int, predicted_n: int) -> dict:
    """llama.cpp's timings object (also sent by its OpenAI routes). predicted_ms runs from the first
    token (which comes with the prompt's logits) to the end, so the rate is over predicted_n - 1
    decode steps, as llama.cpp computes it."""
    prompt_ms = g.prompt_ms if g is not None else 0.0
    predicted_ms = g.decode_ms if g is not None else 0.0
    steps = max(0, predicted_n - 1)
    return {"cache_n": cache_n, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": 1000.0 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / steps if steps else 0.0,
            "predicted_per_second": 1000.0 * steps / predicted_ms if predicted_ms > 0 and steps else 0.0}


# ---- request fields every API maps the same way ---------------------------------------------------------
# Structured output needs a grammar-constrained sampler, which this server does not have: a request
# that asks for it is refused rather than answered with unconstrained text.
STRUCTURED_FIELDS = ("response_format", "json_schema", "grammar")


def refuse_structured(req: BaseModel, fields: Sequence[str] = STRUCTURED_FIELDS) -> None:
    for name in fields:
        value = getattr(req, name, None)
        if name == "response_format" and isinstance(value, dict) and value.get("type") in (None, "text") \
                and len(value) <= 1:
            continue  # {"type": "text"} is OpenAI's default: plain text is what it asks for
        if value is not None and value != "":  # json_schema {} still asks for JSON ("any JSON", llama.cpp)
            raise APIError(400, f"'{name}' (structured output) is not supported by this server: it has no "
                                "grammar-constrained sampling; leave it out", name)


def logit_bias(value: Any, tokenizer, field: str = "logit_bias", ban: Iterable[int] = ()) -> tuple[tuple[int, float], ...]:
    """llama.cpp's and OpenAI's logit_bias as (id, bias) pairs: a list of [token, bias] pairs or an
    object {token: bias}; a token is an id (a number, or a string of digits as OpenAI's JSON keys
    are) or a text, whose every token gets the bias; a bias of false bans the token. `ban`: ids
    banned on top (llama.cpp's ignore_eos bans the end-of-generation tokens this way)."""
    banned = tuple((int(t), -math.inf) for t in ban)
    if value in (None, [], {}):
        return banned
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = [tuple(p) for p in value]
    else:
        raise APIError(400, f"'{field}' must be an object {{token: bias}} or a list of [token, bias] pairs", field)
    vocab = tokenizer.vocab_size
    out: dict[int, float] = {}
    for token, bias in pairs:
        if bias is False:
            bias = -math.inf
        elif isinstance(bias, bool) or not isinstance(bias, (int, float)) or math.isnan(bias):
            raise APIError(400, f"'{field}': the bias of {token!r} must be a number or false", field)
        if isinstance(token, int) and not isinstance(token, bool) or isinstance(token, str) and token.isdigit():
            ids = [int(token)]
        elif isinstance(token, str) and token:
            ids = tokenizer.encode(token, parse_special=False)
        else:
            raise APIError(400, f"'{field}': {token!r} is neither a token id nor a text", field)
        for i in ids:
            if not 0 <= i < vocab:
                raise APIError(400, f"'{field}': token id {i} is outside the vocabulary (0..{vocab - 1})", field)
            out[i] = float(bias)
    out.update(banned)
    return tuple(out.items())


__all__ = ["route", "openapi_document", "run_all", "merge", "sse", "SSE_DONE", "ndjson", "stream_response",
           "finish_reason", "generated_ids", "timings", "prompt_progress", "refuse_structured", "logit_bias"]
