"""Errors in each API's own shape.

A route family is chosen from the request path, so one set of exception handlers can answer an
OpenAI client, an Ollama client and a llama.cpp client each in the shape its parser expects:

- OpenAI (`/v1/...`):      {"error": {"message", "type", "param", "code"}}
- Ollama (`/api/...`, `/`): {"error": "message"}
- llama.cpp (the rest):    {"error": {"code": 400, "message", "type"}}
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from pydantic import BaseModel, ValidationError

log = logging.getLogger("codegemma.serve")

OPENAI, OLLAMA, LLAMACPP = "openai", "ollama", "llamacpp"

# HTTP status -> the error type each family uses for it.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
                 501: "not_supported_error", 503: "server_error"}
_LLAMACPP_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                   405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error", 429: "unavailable_error",
                   501: "not_supported_error", 503: "unavailable_error"}


class APIError(Exception):
    """A request the server refuses, with the HTTP status and one clear message.

    `param` names the offending request field (OpenAI reports it); `headers` carries e.g. Retry-After;
    `error_type` replaces the status's usual type and `fields` are added to the error object
    (llama.cpp's exceed_context_size_error carries n_prompt_tokens and n_ctx).
    """

    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None, error_type: str | None = None,
                 fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}
        self.error_type = error_type
        self.fields = fields or {}


def family_of(path: str) -> str:
    if path.startswith("/v1/") or path == "/v1":
        return OPENAI
    if path.startswith("/api/") or path == "/":
        return OLLAMA
    return LLAMACPP


def error_body(family: str, status: int, message: str, param: str | None = None,
               error_type: str | None = None, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    if family == OPENAI:
        return {"error": {"message": message, "type": error_type or _OPENAI_TYPES.get(status, "server_error"),
                          "param": param, "code": None, **(fields or {})}}
    if family == OLLAMA:
        return {"error": message}
    return {"error": {"code": status, "message": message,
                      "type": error_type or _LLAMACPP_TYPES.get(status, "server_error"), **(fields or {})}}


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field and what is wrong with it, plus the field's name."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    path = _field_path(err.get("loc", ()))
    loc = ".".join(path)
    kind = err.get("type", "")
    # A union field reports one error per alternative, tagged with the alternative's type.
    alternatives = [e["loc"][len(path)] for e in errors
                    if _field_path(e.get("loc", ())) == path and len(e["loc"]) > len(path)]
    if len(alternatives) > 1 and kind not in ("missing", "json_invalid"):
        shown = preview(err.get("input"))
        expected = ", ".join(str(a) for a in dict.fromkeys(alternatives))
        return f"invalid value for '{loc}': expected one of {expected} (got {shown})", loc
    if kind == "json_invalid":
        return f"request body is not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})", None
    if kind == "model_type" or (not loc and kind.endswith("_type")):
        return "request body must be a JSON object", None
    if kind == "missing":
        return f"missing required field '{loc}'", loc
    if kind == "extra_forbidden":
        return f"unknown field '{loc}'", loc
    return f"invalid value for '{loc}': {err['msg']} (got {preview(err.get('input'))})", loc or None


def _field_path(loc) -> list[str]:
    """The field names of an error location, without pydantic's union-alternative tags."""
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
        elif part[:1].isupper() or "[" in part or part in _TYPE_TAGS:
            break
        else:
            out.append(part)
    return out


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "tuple"})


def preview(value: Any, room: int = 80) -> str:
    """A short JSON-like rendering of a client's value, at a cost bounded whatever its size or depth
    (the room halves at each level down)."""
    if room < 4:
        return "..."
    if isinstance(value, str):
        text = json.dumps(value[:room], ensure_ascii=False)
    elif isinstance(value, (list, tuple)):
        items = [preview(v, room // 2) for v in value[:4]]
        text = "[" + ", ".join(items + (["..."] if len(value) > 4 else [])) + "]"
    elif isinstance(value, dict):
        items = [f"{preview(str(k), room // 2)}: {preview(v, room // 2)}" for k, v in list(value.items())[:4]]
        text = "{" + ", ".join(items + (["..."] if len(value) > 4 else [])) + "}"
    elif value is None or isinstance(value, (bool, int, float)):
        text = json.dumps(value) if not isinstance(value, int) or abs(value) < 10**30 else f"{value:.3e}"
    else:
        text = type(value).__name__
    return text if len(text) <= room else text[:room - 3] + "..."


async def parse_body(request, model: type[BaseModel]) -> BaseModel:
    """Read the body as JSON into `model` (strict types); any problem is a 4xx APIError.

    Parsed by hand rather than through FastAPI's body injection so that a missing or wrong
    Content-Type header (curl, editor plugins) does not matter and every error has our shape. The
    size and upload-time limits are enforced while reading, by the `receive` the middleware wraps
    (limits.BodyReader); the JSON's size in values is checked before pydantic-core spends the GIL on
    it, and numbers must be finite, as JSON has them (no NaN or Infinity, nor 1e400 overflowing to
    infinity): no code behind the parser ever sees a non-finite number from a client.
    """
    import pydantic_core
    from starlette.requests import ClientDisconnect

    from codegemma.serve.limits import check_json_shape, depth_message

    try:
        raw = await request.body()
    except ClientDisconnect:
        raise APIError(499, "client disconnected while sending the request") from None
    if not raw.strip():
        raise APIError(400, "request body is empty; send a JSON object")
    check_json_shape(raw)
    try:
        data = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        hint = "; NaN and Infinity are not JSON: send finite numbers" if b"NaN" in raw or b"Infinity" in raw else ""
        raise APIError(400, depth_message(str(exc)) or f"request body is not valid JSON ({exc}{hint})") from None
    where = non_finite(data)
    if where is not None:
        raise APIError(400, f"invalid value for '{where}': numbers must be finite (this one overflows)", where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise APIError(400, message, param) from None


def non_finite(data: Any) -> str | None:
    """The path ("options.temperature", "logit_bias.5") of the first non-finite number, or None."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                return f"{path}.{key}" if path else str(key)
            if isinstance(item, (dict, list)):
                stack.append((item, f"{path}.{key}" if path else str(key)))
    return None


def install_handlers(app) -> None:
    """Exception handlers that answer in the shape of the family the request path belongs to."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def respond(request, status, message, param=None, headers=None, error_type=None, fields=None):
        body = error_body(family_of(request.url.path), status, message, param, error_type, fields)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return respond(request, exc.status, exc.message, exc.param, exc.headers, exc.error_type, exc.fields)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return respond(request, 400, f"invalid value for '{loc}': {err['msg']}", loc or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see docs/serving.md for the endpoints"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return respond(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        # The server must survive any request: log the traceback, answer 500 in the right shape.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(request, 500, f"internal server error: {type(exc).__name__}: {exc}")
