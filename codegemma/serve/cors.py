"""CORS as llama.cpp's server does it: any OPTIONS request is a preflight answered at once (before
the API key is checked: browsers send preflights without credentials), and responses to allowed
origins carry Access-Control-Allow-Origin (the origin itself) and -Credentials.

Origins (`--cors-origins`): "*" (the default, llama.cpp's: every origin is reflected, which suits a
server of stateless completion routes), "none", or a comma list of origins where the word
`localhost` stands for http(s)://localhost, 127.0.0.1 and [::1] on any port.
"""

from __future__ import annotations

import re

ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
_LOCAL = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$")


class OriginPolicy:
    def __init__(self, spec: str | None = "*"):
        items = [s.strip().rstrip("/") for s in (spec or "*").split(",") if s.strip()]
        self.any = "*" in items
        self.local = "localhost" in items
        self.exact = frozenset(i for i in items if i not in ("*", "localhost", "none"))

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.exact or (self.local and bool(_LOCAL.match(origin)))


class CORSMiddleware:
    """Pure ASGI (a streamed reply passes through untouched but for its first message's headers)."""

    def __init__(self, app, origins: str | None = "*"):
        self.app = app
        self.policy = OriginPolicy(origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        origin = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"origin"), None)
        allowed = origin is not None and self.policy.allows(origin)
        # Names in llama.cpp's casing: header names are case-insensitive, but its test suite (and
        # so perhaps a client) reads them from a plain dict.
        cors = [(b"Access-Control-Allow-Origin", origin.encode("latin-1")),
                (b"Access-Control-Allow-Credentials", b"true"), (b"Vary", b"Origin")] if allowed else []
        if scope["method"] == "OPTIONS":
            headers = cors + ([(b"Access-Control-Allow-Methods", ALLOW_METHODS),
                               (b"Access-Control-Allow-Headers", b"*"),
                               (b"Access-Control-Max-Age", b"600")] if allowed else [])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"0"), *headers]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message):
            if cors and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)
