"""Ollama-compatible routes: /api/generate (FIM through `suffix`), /api/chat, /api/tags, /api/show,
/api/ps, /api/version and the `HEAD /` heartbeat. `GET /` is the completion playground
(playground.py), or "Ollama is running" for a request that accepts text/plain only.

The served model behaves like Ollama's `codegemma` model with the template of the server's FIM
order (codegemma.fim.templates; /api/show reports it, which is how Continue decides that FIM works),
so `{prompt, suffix}` is a FIM request and a prompt without suffix (or with raw=true) runs verbatim.
Streams are NDJSON (default stream=true); durations are nanoseconds. Any model name is accepted
(one model is served); a missing `model` is a 400, as in Ollama. `format` (JSON mode or a schema)
is refused with a 400: there is no constrained sampling.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from codegemma.fim.templates import modelfile, ollama_template, parameters_text
from codegemma.model.licence import model_licence
from codegemma.serve.backend import Backend
from codegemma.serve.errors import OLLAMA, APIError
from codegemma.serve.limits import Int64Seed
from codegemma.serve.playground import playground_html
from codegemma.serve.protocol import finish_reason, ndjson, refuse_structured, route, run_all, stream_response

# The Ollama API version whose shapes this module follows (clients gate features on it).
OLLAMA_API_VERSION = "0.6.3"
# The model's "Modelfile" defaults: greedy and no repeat penalty, as the CodeGemma GGUF card asks
# (Ollama's own defaults, temperature 0.8 and repeat_penalty 1.1, hurt code completion).
DEFAULT_OPTIONS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repeat_penalty": 1.0}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class OllamaOptions(_Strict):
    num_predict: int | None = Field(None, ge=-2)  # -1: until the context is full; -2: fill it
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = None  # <= 0: no cut (llama.cpp; Ollama passes it on)
    top_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    stop: list[str] | str | None = None
    seed: Int64Seed | None = None
    num_ctx: int | None = Field(None, ge=1)


class _Base(_Strict):
    model: str | None = None
    stream: bool = True
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None
    format: str | dict | None = None


class OllamaGenerateRequest(_Base):
    prompt: str = ""
    suffix: str | None = None
    raw: bool = False
    system: str | None = None  # the codegemma template has no .System: ignored, as in Ollama
    template: str | None = None  # ignored: the codegemma template above is always used
    context: list[int] | None = None  # deprecated conversation state: ignored


class OllamaMessage(_Strict):
    role: str
    content: str = ""


class OllamaChatRequest(_Base):
    messages: list[OllamaMessage] = Field(default_factory=list)


class OllamaShowRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    name: str | None = None  # older clients (Continue) send the name here


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def build_router(backend: Backend, ui: bool = True) -> APIRouter:
    router = APIRouter()
    licence = model_licence(backend.model_dir)  # read once: /api/show reports the served model's own

    def require_model(req: _Base) -> str:
        if not req.model:
            raise APIError(400, "model is required", "model")
        return req.model

    def sampling(req: _Base, prepared):
        o = {**DEFAULT_OPTIONS, **(req.options.model_dump(exclude_none=True) if req.options else {})}
        stop = o.get("stop") or []
        return backend.sampling(prepared, temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"],
                                repetition_penalty=o["repeat_penalty"], seed=o.get("seed"),
                                stop=[stop] if isinstance(stop, str) else stop,
                                names={"repetition_penalty": "repeat_penalty"})

    def limits(req: _Base) -> dict:
        o = req.options or OllamaOptions()
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
        return {"done": True, "done_reason": finish_reason(c), "total_duration": _ns(g.total_ms), "load_duration": 0,
                "prompt_eval_count": c.prompt_tokens if c else len(g.prepared.ids),
                "prompt_eval_duration": _ns(g.prompt_ms),
                "eval_count": c.completion_tokens if c else 0, "eval_duration": _ns(g.decode_ms)}

    async def respond(request: Request, req: _Base, model: str, prepared, chat: bool):
        refuse_structured(req, ("format",))
        gen = backend.start(prepared, sampling(req, prepared))

        def piece(text: str) -> dict:
            if chat:
                return {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": text}}
            return {"model": model, "created_at": _now(), "response": text}

        if not req.stream:
            await run_all([gen], request)
            return JSONResponse({**piece(gen.text), **final_fields(gen)})

        async def lines():
            async for delta in gen.deltas():
                if delta.text:
                    yield ndjson({**piece(delta.text), "done": False})
            yield ndjson({**piece(""), **final_fields(gen)})

        return stream_response(lines(), [gen], OLLAMA)

    @route(router, "POST", ["/api/generate"], OllamaGenerateRequest)
    async def generate(request: Request, req: OllamaGenerateRequest):
        model = require_model(req)
        if not req.prompt and not req.suffix:
            return loaded(model, req, chat=False)
        lim = limits(req)
        if req.suffix and not req.raw:
            prepared = await asyncio.to_thread(backend.fim_prompt, req.prompt, req.suffix, **lim)
        else:
            prepared = await asyncio.to_thread(backend.text_prompt, req.prompt, **lim)
        return await respond(request, req, model, prepared, chat=False)

    @route(router, "POST", ["/api/chat"], OllamaChatRequest)
    async def chat(request: Request, req: OllamaChatRequest):
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

    @route(router, "GET", ["/api/tags"])
    async def tags(request: Request):
        return {"models": [model_entry(backend.model_name)]}

    @route(router, "GET", ["/api/ps"])
    async def ps(request: Request):
        entry = model_entry(backend.model_name)
        return {"models": [{**entry, "expires_at": "2318-01-01T00:00:00Z", "size_vram": entry["size"]}]}

    @route(router, "POST", ["/api/show"], OllamaShowRequest)
    async def show(request: Request, req: OllamaShowRequest):
        name = req.model or req.name
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
        return {"license": licence,
                # the model's name, never its directory: clients have no business with server paths
                "modelfile": modelfile(backend.model_name, backend.fim_mode,
                                       parameters=DEFAULT_OPTIONS),
                "parameters": parameters_text(DEFAULT_OPTIONS), "template": template, "details": details(),
                "model_info": info, "capabilities": ["completion", "insert"],
                "modified_at": model_entry(name)["modified_at"]}

    @route(router, "GET", ["/api/version"])
    async def version(request: Request):
        return {"version": OLLAMA_API_VERSION}

    @route(router, "HEAD", ["/"])
    async def heartbeat(request: Request):
        """The Ollama client's heartbeat (HEAD /): only the status is read."""
        return PlainTextResponse("Ollama is running")

    @route(router, "GET", ["/"])
    async def root(request: Request):
        """The completion playground, as llama.cpp serves its web page here (404 with --no-ui, as
        llama-server's); "Ollama is running" to a client that asks for plain text only (no Ollama
        client reads this route's body)."""
        accept = request.headers.get("accept", "")
        if "text/plain" in accept and "text/html" not in accept and "*/*" not in accept:
            return PlainTextResponse("Ollama is running")
        if not ui:
            raise APIError(404, "the playground page is off (serve --no-ui); the APIs are served as usual")
        return HTMLResponse(playground_html(backend))

    return router

