"""llama.cpp-server-compatible routes: POST /infill, /completion (alias /completions), GET /props.

What llama.vim and llama.vscode rely on:
- /infill: `input_prefix`, `input_suffix`, `input_extra` [{filename, text}] rendered as CodeGemma
  multi-file context (`path\\n{text}<|file_separator|>` before the current file), and `prompt`
  placed after <|fim_middle|>: it is the text typed on the cursor's line, and the reply continues
  after it (the reply does not repeat it).
- `n_predict: 0` only evaluates the prompt into the prefix cache (the editors' warm-up requests).
- `t_max_predict_ms` (engine time limit from the first token), `n_indent` (stop at the first new
  line indented less; llama.cpp's rule, applied here to the text stream), `n_cmpl` (N alternatives,
  returned as an array), `response_fields` ("timings/prompt_n" comes back under that literal key).
- SSE as llama.cpp sends it: `data: {"content": ..., "stop": false}` events, a last `stop: true`
  event with timings, and no `[DONE]`.
- Any `model` is accepted; `cache_prompt` is accepted and always on (the engine reuses prefixes).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.serve.backend import Backend, ClientGone, Generation, guarded_stream
from codegemma.serve.errors import LLAMACPP, APIError, error_body, parse_body

MAX_ALTERNATIVES = 8


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Params(_Strict):
    n_predict: int = Field(-1, ge=-1)  # -1: until the context is full; 0: only cache the prompt
    temperature: float = Field(0.8, ge=0)  # llama.cpp's defaults
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, ge=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0)
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    seed: int = -1  # -1: random
    cache_prompt: bool = True
    n_indent: int = Field(0, ge=0)
    t_max_predict_ms: int = Field(0, ge=0)  # 0: no time limit
    n_cmpl: int = Field(1, ge=1, le=MAX_ALTERNATIVES)
    response_fields: list[str] | None = None
    model: str | None = None


class CompletionRequest(_Params):
    prompt: str | list[int]


class ExtraChunk(_Strict):
    filename: str = "untitled"
    text: str


class InfillRequest(_Params):
    input_prefix: str
    input_suffix: str
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    prompt: str = ""


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

    def settings(req: _Params, prepared) -> dict:
        return {"n_predict": req.n_predict, "temperature": req.temperature, "top_k": req.top_k,
                "top_p": req.top_p, "repeat_penalty": req.repeat_penalty, "seed": req.seed, "stop": req.stop,
                "n_indent": req.n_indent, "t_max_predict_ms": req.t_max_predict_ms, "n_ctx": prepared.n_ctx,
                "cache_prompt": req.cache_prompt, "model": req.model or backend.model_name}

    def sampling(req: _Params, prepared, j: int):
        seed = None if req.seed < 0 else req.seed + j
        return backend.sampling(prepared, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                                repetition_penalty=req.repeat_penalty, seed=seed, stop=req.stop,
                                max_time_ms=float(req.t_max_predict_ms) or None)

    def timings(prompt_n: int, cache_n: int, prompt_ms: float, predicted_n: int, predicted_ms: float) -> dict:
        return {"cache_n": cache_n, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
                "prompt_per_second": 1000.0 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
                "predicted_n": predicted_n, "predicted_ms": predicted_ms,
                "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
                "predicted_per_second": 1000.0 * predicted_n / predicted_ms if predicted_ms > 0 else 0.0}

    def final(req: _Params, prepared, g: Generation | None, guard: IndentGuard | None, index: int,
              content: str, warmed: int = 0) -> dict:
        c = g.completion if g is not None else None
        stop_type, word = "limit", ""
        if c is not None and not (guard and guard.stopped):
            if c.finish_reason == "stop":
                if c.stop_token_id is None and c.stop_text and c.stop_text in req.stop:
                    stop_type, word = "word", c.stop_text
                else:
                    stop_type = "eos"
            elif c.finish_reason == "cancelled":
                stop_type = "none"
        prompt_tokens = c.prompt_tokens if c is not None else len(prepared.ids)
        cached = c.cached_tokens if c is not None else warmed
        generated = c.completion_tokens if c is not None else 0
        obj = {"index": index, "content": content, "tokens": [], "id_slot": -1, "stop": True,
               "model": req.model or backend.model_name, "tokens_predicted": generated,
               "tokens_evaluated": prompt_tokens, "generation_settings": settings(req, prepared),
               "has_new_line": "\n" in content, "truncated": prepared.truncated, "stop_type": stop_type,
               "stopping_word": word, "tokens_cached": cached,
               "timings": timings(prompt_tokens - cached, cached, g.prompt_ms if g else 0.0, generated,
                                  g.decode_ms if g else 0.0)}
        return nested_fields(req.response_fields, obj) if req.response_fields else obj

    async def collect(request: Request, g: Generation, guard: IndentGuard) -> str:
        """The whole text of one alternative, honouring n_indent; cancels on client disconnect."""
        async def consume():
            async with aclosing(g.deltas()) as stream:  # closing the stream cancels the engine request
                async for delta in stream:
                    guard.feed(delta)
                    if guard.stopped:
                        break
            await g.final()
            return guard.text

        task = asyncio.ensure_future(consume())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.2)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    backend.metrics.disconnects.inc()
                    raise ClientGone()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            g.cancel()

    async def serve(request: Request, req: _Params, prepared):
        if req.n_cmpl > 1 and req.stream:
            raise APIError(400, "n_cmpl > 1 cannot be streamed; send stream: false")
        if req.n_predict == 0:  # warm-up: put the prompt into the prefix cache, generate nothing
            try:
                warmed = await backend.warm(prepared, request)
            except ClientGone:
                raise APIError(499, "client disconnected") from None
            obj = final(req, prepared, None, None, 0, "", warmed.prompt_tokens)
            if req.stream:
                return guarded_stream(_once(f"data: {json.dumps(obj)}\n\n"), [], "text/event-stream")
            return JSONResponse(obj)
        gens = backend.start_all([(prepared, sampling(req, prepared, j)) for j in range(req.n_cmpl)])
        if not req.stream:
            guards = [IndentGuard(req.n_indent) for _ in gens]

            async def text_of(g: Generation, guard: IndentGuard) -> str:
                if req.n_indent > 0:  # the text must be watched as it grows
                    return await collect(request, g, guard)
                return (await g.run(request)).text

            try:
                texts = await asyncio.gather(*(text_of(g, gd) for g, gd in zip(gens, guards)))
            except ClientGone:
                raise APIError(499, "client disconnected") from None
            finally:
                for g in gens:
                    g.cancel()
            results = [final(req, prepared, g, gd, i, t) for i, (g, gd, t) in enumerate(zip(gens, guards, texts))]
            return JSONResponse(results if req.n_cmpl > 1 else results[0])

        g, guard = gens[0], IndentGuard(req.n_indent)

        async def events():
            try:
                n = 0
                async with aclosing(g.deltas()) as stream:
                    async for delta in stream:
                        n += 1
                        out = guard.feed(delta)
                        if out:
                            yield _sse({"index": 0, "content": out, "tokens": [], "stop": False, "id_slot": -1,
                                        "tokens_predicted": n, "tokens_evaluated": len(prepared.ids)})
                        if guard.stopped:
                            break
                rest = guard.flush()
                if rest:
                    yield _sse({"index": 0, "content": rest, "tokens": [], "stop": False, "id_slot": -1})
                await g.final()
                yield _sse(final(req, prepared, g, guard, 0, ""))
            except Exception as exc:  # the status is already 200: report in-band
                yield _sse(error_body(LLAMACPP, 500, f"generation failed: {exc}"))

        return guarded_stream(events(), gens, "text/event-stream")

    @router.post("/infill")
    async def infill(request: Request):
        req: InfillRequest = await parse_body(request, InfillRequest)
        context = [(e.filename, e.text) for e in req.input_extra]
        prepared = await asyncio.to_thread(
            backend.fim_prompt, req.input_prefix, req.input_suffix, context=context, middle=req.prompt,
            max_new_tokens=None if req.n_predict < 0 else req.n_predict)
        return await serve(request, req, prepared)

    @router.post("/completion")
    @router.post("/completions")
    async def completion(request: Request):
        req: CompletionRequest = await parse_body(request, CompletionRequest)
        limit = None if req.n_predict < 0 else req.n_predict
        if isinstance(req.prompt, list):
            prepared = await asyncio.to_thread(backend.token_prompt, req.prompt, max_new_tokens=limit)
        else:
            if not req.prompt:
                raise APIError(400, "'prompt' must not be empty", "prompt")
            prepared = await asyncio.to_thread(backend.text_prompt, req.prompt, max_new_tokens=limit)
        return await serve(request, req, prepared)

    @router.get("/props")
    async def props():
        return {"default_generation_settings": {"n_ctx": backend.n_ctx, "params": _Params().model_dump()},
                "total_slots": int(getattr(backend.engine, "max_slots", 1)), "model_path": backend.model_dir,
                "model_alias": backend.model_name, "chat_template": "gemma", "build_info": "codegemma"}

    return router


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _once(text: str):
    yield text
