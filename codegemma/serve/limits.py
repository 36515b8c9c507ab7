"""Every bound the server puts on what a client may send or hold, as named constants, and the small
checks that enforce the request-level ones (each raises a 4xx APIError naming the limit).

Where each is enforced:
- body size and upload time: app.GuardMiddleware wraps `receive` (`BodyReader`), for every route;
- JSON shape (values, nesting, finite numbers): errors.parse_body, before validation
  (`check_json_shape`, `depth_message`);
- stops: Backend.sampling, which every route's stops pass through (`check_stops`);
- seeds: the request models' field types (`LlamaSeed`, `Int64Seed`), so /openapi.json shows them;
- /tokenize text: `check_tokenize_chars`;
- connections (header time, idle, slow readers, how many): connections.py.
The limits an operator may change are `ClientLimits` (`codegemma serve` options); the rest are
constants.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Le  # pydantic's constraint markers, without importing pydantic (CLI start-up)

# ---- what an operator may change (codegemma serve --max-body-mb, --client-timeout, ...) --------------
@dataclass(frozen=True)
class ClientLimits:
    """What one client may send and hold; app.GuardMiddleware and connections.py enforce them."""
    # 16 times a 131,072-token context's worth of text, 256 times an 8192-token one; checking and parsing
    # a body takes tenths of a second per 10 MB with the GIL held, so the cap bounds that too.
    max_body_bytes: int = 8 * 1024 * 1024
    # Headers must be complete within this of the connection opening (or of the previous response);
    # a body within this plus one second per BODY_MIN_RATE bytes received (a slow link gets time in
    # proportion to what it sends, a client trickling bytes does not); a response the client reads
    # nothing of for this long is dropped. Editors on this machine take milliseconds for each.
    client_timeout_s: float = 10.0
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's default)
    max_connections: int = 1024  # open at once (lowered to fit the process's file limit)
    max_per_client: int = 64  # open at once per remote address (0: no cap); loopback is not capped
    backlog: int = 128  # listen() queue, and the most sockets asyncio accepts per event-loop turn


MAX_BODY_BYTES = ClientLimits.max_body_bytes
BODY_MIN_RATE = 64 * 1024  # bytes per second, see ClientLimits.client_timeout_s

# ---- request bodies --------------------------------------------------------------------------------
# Parsing and validating JSON costs about a microsecond per value with the GIL held (pydantic-core
# does not release it), so a body of millions of tiny values would stall every other request; no
# request needs more values than this (token-id prompts are capped by the context anyway).
MAX_JSON_VALUES = 1 << 17
# Nesting: pydantic-core's JSON parser refuses deeper documents itself (a recursion limit of about
# this depth, in Rust, never a Python RecursionError); errors.parse_body words its error with this.
MAX_JSON_DEPTH = 200

# ---- request fields --------------------------------------------------------------------------------
# Every generated token is checked against every stop string on the engine thread: 10,000 of them
# slowed every client's decoding by three orders of magnitude. OpenAI allows 4; Continue sends 6-9.
MAX_STOPS = 16
MAX_STOP_CHARS = 256
# /tokenize returns one id (and piece) per token, rendered as JSON with the GIL held: 64 Ki characters
# can be 128 Ki tokens (a tokenizer falling back to bytes), a few megabytes, some tenths of a second.
# Editors tokenise what they may send, at most a context's worth (8192 tokens: about 30 Ki characters).
MAX_TOKENIZE_CHARS = 1 << 16

UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# llama.cpp: a uint32 seed, or -1 for a random one.
LlamaSeed = Annotated[int, Ge(-1), Le(UINT32_MAX)]
# OpenAI, Ollama, Mistral: a 64-bit integer.
Int64Seed = Annotated[int, Ge(INT64_MIN), Le(INT64_MAX)]


# ---- checks ------------------------------------------------------------------------------------------
def refusal(status: int, message: str, param: str | None = None) -> Exception:
    """The APIError to raise (imported here: errors.py imports pydantic, which the CLI's start-up
    should not pay for)."""
    from codegemma.serve.errors import APIError

    return APIError(status, message, param)


def check_stops(stops, field: str = "stop") -> tuple[str, ...]:
    """The client's stop strings (empty ones dropped, duplicates merged), or a 400 naming the cap."""
    stops = [stops] if isinstance(stops, str) else list(stops or ())
    if len(stops) > MAX_STOPS:
        raise refusal(400, f"'{field}' has {len(stops)} entries; at most {MAX_STOPS} are allowed", field)
    for i, s in enumerate(stops):
        if not isinstance(s, str):
            raise refusal(400, f"'{field}' entries must be strings (entry {i} is not)", field)
        if len(s) > MAX_STOP_CHARS:
            raise refusal(400, f"'{field}' entry {i} is {len(s)} characters long; a stop string may have at "
                                f"most {MAX_STOP_CHARS}", field)
    return tuple(dict.fromkeys(s for s in stops if s))


def check_tokenize_chars(n_chars: int, field: str = "content") -> None:
    if n_chars > MAX_TOKENIZE_CHARS:
        raise refusal(400, f"'{field}' holds {n_chars} characters; /tokenize takes at most {MAX_TOKENIZE_CHARS} "
                           "at once: send it in parts", field)


_STRING = re.compile(rb'"[^"]*"')
_NOT_QUOTE_OR_COMMA = bytes(range(256)).translate(None, b'",')


def check_json_shape(raw: bytes, max_values: int = MAX_JSON_VALUES) -> None:
    """A 400 for a body with more than `max_values` JSON values, before the parser spends the GIL on
    them: strings (counted by their quotes) or separators (commas outside strings). Commas inside
    strings (code is full of them) are told apart only when a quick upper bound is over the limit, so
    the usual body costs one byte count; every step is a C loop over the bytes, none per value."""
    if raw.count(b",") < max_values:
        return
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string.
    bare = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_QUOTE_OR_COMMA)
    if bare.count(b'"') // 2 < max_values and _STRING.sub(b"", bare).count(b",") < max_values:
        return  # (fewer strings than the limit: the substitution makes fewer matches than that)
    raise refusal(400, f"the request body holds more than {max_values} JSON values; no request needs that "
                       "many (send token ids within the context length, text as strings)")


def depth_message(parser_error: str) -> str | None:
    """Our wording for pydantic-core's nesting error, or None for any other JSON error."""
    if "recursion limit" not in parser_error:
        return None
    return f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels; send a flat request object"


class BodyReader:
    """An ASGI `receive` that enforces MAX_BODY_BYTES and the upload deadline while the body is read:
    413 as soon as the running total passes the limit (chunked bodies too), 408 when the upload is
    too slow; nothing beyond the limit is ever held. Once the body is complete it passes messages
    through untouched (disconnect polling)."""

    def __init__(self, receive, max_bytes: int = MAX_BODY_BYTES,
                 timeout_s: float = ClientLimits.client_timeout_s, min_rate: float = BODY_MIN_RATE):
        self._receive = receive
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.received = 0
        self.complete = False
        self.started = time.monotonic()

    async def __call__(self):
        import asyncio

        if self.complete:
            return await self._receive()
        left = self.started + self.timeout_s + self.received / self.min_rate - time.monotonic()
        try:
            message = await asyncio.wait_for(self._receive(), timeout=max(0.0, left))
        except asyncio.TimeoutError:
            raise refusal(408, f"the request body arrived too slowly (more than {self.timeout_s:.0f} s plus one "
                                f"second per {self.min_rate // 1024} KiB); send it at once") from None
        if message["type"] != "http.request":
            self.complete = True
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.max_bytes:
            raise refusal(413, too_large(self.max_bytes))
        if not message.get("more_body", False):
            self.complete = True
        return message


def too_large(max_bytes: int, declared: int | None = None) -> str:
    size = f"of {declared} bytes " if declared is not None else ""
    return (f"request body {size}is larger than the limit of {max_bytes} bytes; send less context "
            "(the server would cut it to the context length anyway)")
