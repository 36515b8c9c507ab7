"""Ollama-compatible routes: /api/generate (FIM through `suffix`), /api/chat, /api/tags, /api/show,
/api/ps, /api/version and the `GET /` probe.

The served model behaves like Ollama's `codegemma` model with the template of the server's FIM
order (codegemma.fim.templates; /api/show reports it, which is how Continue decides that FIM works),
so `{prompt, suffix}` is a FIM request and a prompt without suffix (or with raw=true) runs verbatim.
Streams are NDJSON (default stream=true); durations are nanoseconds. Any model name is accepted
(one model is served); a missing `model` is a 400, as in Ollama.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.fim.templates import modelfile, ollama_template, parameters_text
from codegemma.serve.backend import Backend, ClientGone, guarded_stream
from codegemma.serve.errors import OLLAMA, APIError, error_body, parse_body

# The Ollama API version whose shapes this module follows (clients gate features on it).
OLLAMA_API_VERSION = "0.6.3"
# The model's "Modelfile" defaults: greedy and no repeat penalty, as the CodeGemma GGUF card asks
# (Ollama's own defaults, temperature 0.8 and repeat_penalty 1.1, hurt code completion).
DEFAULT_OPTIONS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repeat_penalty": 1.0}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Options(_Strict):
    num_predict: int | None = Field(None, ge=-2)  # -1: until the context is full; -2: fill it
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    stop: list[str] | str | None = None
    seed: int | None = None
    num_ctx: int | None = Field(None, ge=1)


class _Base(_Strict):
    model: str | None = None
    stream: bool = True
    options: Options | None = None
    keep_alive: str | int | float | None = None
    format: str | dict | None = None


class GenerateRequest(_Base):
    prompt: str = ""
    suffix: str | None = None
    raw: bool = False
    system: str | None = None  # the codegemma template has no .System: ignored, as in Ollama
    template: str | None = None  # ignored: the codegemma template above is always used
    context: list[int] | None = None  # deprecated conversation state: ignored


class Message(_Strict):
    role: str
    content: str = ""


class ChatRequest(_Base):
    messages: list[Message] = Field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def _line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def build_router(backend: Backend) -> APIRouter:
    router = APIRouter()

    def require_model(req: _Base) -> str:
        if not req.model:
            raise APIError(400, "model is required", "model")
        return req.model

    def sampling(req: _Base, prepared):
        o = {**DEFAULT_OPTIONS, **(req.options.model_dump(exclude_none=True) if req.options else {})}
        stop = o.get("stop") or []
        return backend.sampling(prepared, temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"],
                                repetition_penalty=o["repeat_penalty"], seed=o.get("seed"),
                                stop=[stop] if isinstance(stop, str) else stop)

    def limits(req: _Base) -> dict:
        o = req.options or Options()
        n = o.num_predict
        return {"max_new_tokens": None if n is None or n < 0 else n, "n_ctx": o.num_ctx}

    def loaded(model: str, req: _Base, chat: bool):
        # Ollama answers an empty request by (un)loading the model.
        reason = "unload" if req.keep_alive in (0, "0", "0s", "0m") else "load"
        body = {"model": model, "created_at": _now(), "done": True, "done_reason": reason}
        body.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
        return JSONResponse(body)

    def final_fields(g) -> dict:
        c = g.completion
        reason = "length" if c is not None and c.finish_reason in ("length", "time") else "stop"
        return {"done": True, "done_reason": reason, "total_duration": _ns(g.total_ms), "load_duration": 0,
                "prompt_eval_count": c.prompt_tokens if c else len(g.prepared.ids),
                "prompt_eval_duration": _ns(g.prompt_ms),
                "eval_count": c.completion_tokens if c else 0, "eval_duration": _ns(g.decode_ms)}

    async def respond(request: Request, req: _Base, model: str, prepared, chat: bool):
        gen = backend.start(prepared, sampling(req, prepared))

        def piece(text: str) -> dict:
            if chat:
                return {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": text}}
            return {"model": model, "created_at": _now(), "response": text}

        if not req.stream:
            try:
                c = await gen.run(request)
            except ClientGone:
                raise APIError(499, "client disconnected") from None
            return JSONResponse({**piece(c.text), **final_fields(gen)})

        async def lines():
            try:
                async for text in gen.deltas():
                    yield _line({**piece(text), "done": False})
                yield _line({**piece(""), **final_fields(gen)})
            except Exception as exc:  # status 200 is already sent: report in-band, as Ollama does
                yield _line(error_body(OLLAMA, 500, f"generation failed: {exc}"))

        return guarded_stream(lines(), [gen], "application/x-ndjson")

    @router.post("/api/generate")
    async def generate(request: Request):
        req: GenerateRequest = await parse_body(request, GenerateRequest)
        model = require_model(req)
        if not req.prompt and not req.suffix:
            return loaded(model, req, chat=False)
        lim = limits(req)
        if req.suffix and not req.raw:
            prepared = await asyncio.to_thread(backend.fim_prompt, req.prompt, req.suffix, **lim)
        else:
            prepared = await asyncio.to_thread(backend.text_prompt, req.prompt, **lim)
        return await respond(request, req, model, prepared, chat=False)

    @router.post("/api/chat")
    async def chat(request: Request):
        req: ChatRequest = await parse_body(request, ChatRequest)
        model = require_model(req)
        if not req.messages:
            return loaded(model, req, chat=True)
        for i, m in enumerate(req.messages):
            if m.role not in ("system", "user", "assistant"):
                raise APIError(400, f"messages[{i}]: unknown role {m.role!r}; use system, user or assistant")
        messages = [m.model_dump() for m in req.messages]
        prepared = await asyncio.to_thread(backend.chat_prompt, messages, **limits(req))
        return await respond(request, req, model, prepared, chat=True)

    def details() -> dict:
        cfg = backend.config
        params = cfg.num_parameters() if cfg is not None and hasattr(cfg, "num_parameters") else 0
        size = f"{params / 1e9:.1f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
        dtype = str(getattr(backend.engine.cache, "dtype", "")) if hasattr(backend.engine, "cache") else ""
        return {"parent_model": "", "format": "safetensors", "family": "gemma", "families": ["gemma"],
                "parameter_size": size, "quantization_level": dtype.replace("torch.", "").upper() or "F32"}

    def model_entry(name: str) -> dict:
        size, mtime = 0, backend.created
        if backend.model_dir and Path(backend.model_dir).is_dir():
            files = [p for p in Path(backend.model_dir).iterdir() if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            mtime = max((p.stat().st_mtime for p in files), default=mtime)
        digest = hashlib.sha256(f"{backend.model_dir}:{size}:{mtime}".encode()).hexdigest()
        modified = datetime.fromtimestamp(mtime, timezone.utc).isoformat().replace("+00:00", "Z")
        return {"name": name, "model": name, "modified_at": modified, "size": size, "digest": digest,
                "details": details()}

    @router.get("/api/tags")
    async def tags():
        return {"models": [model_entry(backend.model_name)]}

    @router.get("/api/ps")
    async def ps():
        entry = model_entry(backend.model_name)
        return {"models": [{**entry, "expires_at": "2318-01-01T00:00:00Z", "size_vram": entry["size"]}]}

    @router.post("/api/show")
    async def show(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise APIError(400, "request body is not valid JSON") from None
        name = body.get("model") or body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise APIError(400, "model is required", "model")
        cfg = backend.config
        template = ollama_template(backend.fim_mode)
        info = {"general.architecture": "gemma", "gemma.context_length": backend.n_ctx}
        if cfg is not None:
            info.update({"general.parameter_count": cfg.num_parameters() if hasattr(cfg, "num_parameters") else 0,
                         "gemma.embedding_length": getattr(cfg, "hidden_size", 0),
                         "gemma.block_count": getattr(cfg, "num_hidden_layers", 0),
                         "gemma.attention.head_count": getattr(cfg, "num_attention_heads", 0),
                         "gemma.attention.head_count_kv": getattr(cfg, "num_key_value_heads", 0)})
        return {"license": "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
                "modelfile": modelfile(backend.model_dir or backend.model_name, backend.fim_mode,
                                       parameters=DEFAULT_OPTIONS),
                "parameters": parameters_text(DEFAULT_OPTIONS), "template": template, "details": details(),
                "model_info": info, "capabilities": ["completion", "insert"],
                "modified_at": model_entry(name)["modified_at"]}

    @router.get("/api/version")
    async def version():
        return {"version": OLLAMA_API_VERSION}

    @router.get("/", response_class=PlainTextResponse)
    @router.head("/", response_class=PlainTextResponse)
    async def root():
        return "Ollama is running"

    return router

