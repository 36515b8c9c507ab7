"""The FastAPI application: the protocol families over one Backend, plus /health, /metrics and
/openapi.json (every route's request model, see protocol.route).

`create_app(backend, api_key=None)` builds it; `run_server(...)` loads a model and runs uvicorn.
Pure ASGI middlewares (not BaseHTTPMiddleware, which buffers streams and hides disconnects) answer
CORS preflights (cors.py), check the API key, enforce the body limits while the body is read, count
clients that leave early and record per-endpoint counts and latency, measured to the response's last
byte. Connection-level guards (header deadline, slow readers, how many connections) are in
connections.py; every limit is in limits.py.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from codegemma import __version__
from codegemma.serve import llamacpp_api, llamacpp_info, mistral_api, ollama_api, openai_api
from codegemma.serve.backend import Backend
from codegemma.serve.cors import CORSMiddleware
from codegemma.serve.errors import error_body, family_of, install_handlers
from codegemma.serve.limits import BodyReader, ClientLimits, too_large
from codegemma.serve.protocol import openapi_document

log = logging.getLogger("codegemma.serve")

# Reachable without the API key: probes, and the playground page (its requests carry the key).
OPEN_PATHS = frozenset({"/health", "/v1/health", "/"})


class GuardMiddleware:
    """Per request: the API key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`), the body limits
    while it is read (limits.BodyReader: 413 past the size, 408 when too slow), the metrics (status
    and latency to the last byte), and a client that leaves before its response is complete, counted
    once whether the response streams or not."""

    def __init__(self, app, backend: Backend, api_key: str | None, limits: ClientLimits):
        self.app = app
        self.backend = backend
        # bytes: a header is bytes, and hmac.compare_digest refuses str with non-ASCII characters
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = limits.max_body_bytes
        self.body_timeout_s = limits.client_timeout_s

    def _authorized(self, scope) -> bool:
        if not self.api_key or scope["path"] in OPEN_PATHS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key):
                    return True
            elif name == b"x-api-key":  # Anthropic-style clients and Continue send this one
                if hmac.compare_digest(value.strip(), self.api_key):
                    return True
        return False

    def _declared_size(self, scope) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit():
                return int(value)
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, started = scope["path"], time.perf_counter()
        state = {"status": 500, "complete": False, "gone": False}
        metrics = self.backend.metrics
        reader = BodyReader(receive, self.max_body_bytes, self.body_timeout_s)

        async def receive_wrapper():
            message = await reader()
            if message["type"] == "http.disconnect" and not state["complete"] and not state["gone"]:
                state["gone"] = True
                metrics.disconnects.inc()
            return message

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["complete"] = True

        try:
            declared = self._declared_size(scope)
            if not self._authorized(scope):
                state["status"] = 401
                await _reply(send, path, 401, "invalid or missing API key: send the header 'Authorization: "
                                              "Bearer <key>' with the key the server was started with",
                             [(b"www-authenticate", b"Bearer")])
            elif declared is not None and declared > self.max_body_bytes:
                state["status"] = 413  # refused before a byte of the body is read
                await _reply(send, path, 413, too_large(self.max_body_bytes, declared))
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            metrics.observe_request(path, state["status"], started)


async def _reply(send, path: str, status: int, message: str, headers=()) -> None:
    body = json.dumps(error_body(family_of(path), status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def create_app(backend: Backend, api_key: str | None = None, close_engine: bool = False,
               cors_origins: str | None = "*", slots: bool = True, ui: bool = True,
               limits: ClientLimits = ClientLimits()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        yield
        if close_engine:
            backend.close()

    app = FastAPI(title="codegemma", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", lifespan=lifespan)
    install_handlers(app)
    routers = [openai_api.build_router(backend), mistral_api.build_router(backend), ollama_api.build_router(backend, ui=ui),
               llamacpp_api.build_router(backend), llamacpp_info.build_router(backend, slots=slots)]
    for router in routers:
        app.include_router(router)

    @app.get("/health")
    @app.get("/v1/health")
    async def health():
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics():
        # Process-Start-Time-Unix: llama-server's header, for rates across restarts
        return Response(backend.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8",
                        headers={"Process-Start-Time-Unix": str(backend.created)})

    @app.get("/debug/slots")
    async def slots():
        """Engine stats as JSON (active slots, queue length, ...) and the server's in-flight count."""
        stats = {k: v for k, v in backend.stats().items() if isinstance(v, (int, float, str, bool))}
        return {**stats, "server_in_flight": backend.in_flight}

    document: dict = {}

    def openapi() -> dict:
        if not document:
            document.update(openapi_document(app, routers, "codegemma", __version__))
        return document

    app.openapi = openapi
    app.add_middleware(GuardMiddleware, backend=backend, api_key=api_key, limits=limits)
    app.add_middleware(CORSMiddleware, origins=cors_origins)  # outermost: preflights need no key
    return app


def load_backend(model_dir: str, *, device: str | None = None, decode: str | None = None, max_slots: int = 4,
                 aliases: Sequence[str] = (), tags: Sequence[str] = (), fim_mode: str = "psm",
                 n_predict: int | None = None, temperature: float | None = None, seed: int | None = None,
                 **load_options) -> Backend:
    """Load weights + tokenizer and start the engine (torch is imported here, not at CLI start).
    `load_options` go to codegemma.load (dtype, max_seq_len, quantize, group_size, allow_nonfinite) and
    through it to the Engine (max_queue, speculate, cache_reuse); the rest are the server's own."""
    from pathlib import Path

    from codegemma.api import load

    if decode is None:  # a server lives long: compiling once for the fastest decode step pays off
        from codegemma.device import resolve_device

        decode = "compile" if resolve_device(device).type == "cuda" else "eager"
    # warmup: compile/capture every graph shape (decode, verification, short prefill chunks) before
    # the first request, with a progress bar (a no-op on CPU): no keystroke waits for a compile.
    cg = load(model_dir, device=device, decode=decode, max_slots=max_slots, warmup=True, progress=True,
              **load_options)
    # the id is the first alias in alphabetical order, as llama-server's (its aliases are a std::set)
    name = min(aliases) if aliases else Path(model_dir).resolve().name
    return Backend(cg.engine, cg.tokenizer, name, config=cg.config, model_dir=str(model_dir), fim_mode=fim_mode,
                   n_predict=n_predict, temperature=temperature, seed=seed, aliases=aliases, tags=tags)


def run_server(backend: Backend, sockets: list, api_key: str | None, log_level: str = "info",
               cors_origins: str | None = "*", slots: bool = True, ui: bool = True,
               limits: ClientLimits = ClientLimits()) -> None:
    import uvicorn

    from codegemma.serve.connections import MAX_HEADER_BYTES, connection_cap, guarded_protocol, raise_file_limit

    app = create_app(backend, api_key=api_key, close_engine=True, cors_origins=cors_origins, slots=slots,
                     ui=ui, limits=limits)
    cap = connection_cap(limits, raise_file_limit())
    dropped = backend.metrics.connections_dropped
    protocol = guarded_protocol(limits, cap, on_drop=lambda reason: dropped.labels(reason).inc())
    # The model, tokenizer, torch and the app are some 300,000 long-lived objects: a full collection
    # walks them all (0.3-0.7 s with the GIL held, stalling every request, /health too) each time enough
    # short-lived objects pile up, as a burst of connections makes them. Frozen, they are never walked.
    gc.collect()
    gc.freeze()
    for s in sockets:
        host, port = s.getsockname()[:2]
        log.info("serving %s on http://%s:%d", backend.model_name, f"[{host}]" if ":" in host else host, port)
    # h11 always (the guards extend its protocol), whatever else is installed; headers of at most
    # 16 KiB (h11's default, stated here because the guards rely on it). The sockets are bound
    # already (one per --host address); uvicorn listens on them.
    config = uvicorn.Config(app, log_level=log_level, http=protocol, backlog=limits.backlog,
                            timeout_keep_alive=limits.keep_alive_s, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=sockets)
