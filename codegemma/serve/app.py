"""The FastAPI application: three protocol families over one Backend, plus /health and /metrics.

`create_app(backend, api_key=None)` builds it; `run_server(...)` loads a model and runs uvicorn.
A pure ASGI middleware (not BaseHTTPMiddleware, which buffers streams and hides disconnects)
checks the API key and records per-endpoint counts and latency, measured to the response's last byte.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from codegemma.serve import llamacpp_api, ollama_api, openai_api
from codegemma.serve.backend import Backend
from codegemma.serve.errors import error_body, family_of, install_handlers

log = logging.getLogger("codegemma.serve")

OPEN_PATHS = frozenset({"/health"})  # reachable without the API key (load balancers, probes)


class GuardMiddleware:
    """API-key check (Bearer) and request metrics, for every route."""

    def __init__(self, app, backend: Backend, api_key: str | None):
        self.app = app
        self.backend = backend
        self.api_key = api_key

    def _authorized(self, scope) -> bool:
        if not self.api_key or scope["path"] in OPEN_PATHS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, started, status = scope["path"], time.perf_counter(), [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                status[0] = 401
                body = json.dumps(error_body(family_of(path), 401, "invalid or missing API key: send the header "
                                             "'Authorization: Bearer <key>' with the key the server was started with"))
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.backend.metrics.observe_request(path, status[0], started)


def create_app(backend: Backend, api_key: str | None = None, close_engine: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        yield
        if close_engine:
            backend.close()

    app = FastAPI(title="codegemma", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install_handlers(app)
    app.include_router(openai_api.build_router(backend))
    app.include_router(ollama_api.build_router(backend))
    app.include_router(llamacpp_api.build_router(backend))

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics():
        return Response(backend.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/debug/slots")
    async def slots():
        """Engine stats as JSON (active slots, queue length, ...) and the server's in-flight count."""
        stats = {k: v for k, v in backend.stats().items() if isinstance(v, (int, float, str, bool))}
        return {**stats, "server_in_flight": backend.in_flight}

    app.add_middleware(GuardMiddleware, backend=backend, api_key=api_key)
    return app


def load_backend(model_dir: str, *, device: str | None = None, dtype: str | None = None,
                 max_slots: int = 4, max_queue: int = 64, max_seq_len: int | None = None,
                 model_name: str | None = None, fim_mode: str = "psm", decode: str | None = None) -> Backend:
    """Load weights + tokenizer and start the engine (torch is imported here, not at CLI start)."""
    from pathlib import Path

    from codegemma.api import load

    # warmup: compile/capture the decode step for every batch size before the first request
    # (a no-op on CPU), so no editor keystroke waits for torch.compile.
    if decode is None:  # a server lives long: compiling once for the fastest decode step pays off
        import torch

        on_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        decode = "compile" if on_gpu else "eager"
    cg = load(model_dir, device=device, dtype=dtype, max_slots=max_slots, max_seq_len=max_seq_len,
              max_queue=max_queue, warmup=True, decode=decode)
    engine, tokenizer, config = cg.engine, cg.tokenizer, cg.config
    name = model_name or Path(model_dir).resolve().name
    return Backend(engine, tokenizer, name, config=config, model_dir=str(model_dir), fim_mode=fim_mode)


def run_server(backend: Backend, host: str, port: int, api_key: str | None, log_level: str = "info") -> None:
    import uvicorn

    app = create_app(backend, api_key=api_key, close_engine=True)
    log.info("serving %s on http://%s:%d", backend.model_name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
