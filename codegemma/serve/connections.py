"""Connection guards: what a client can hold open, and for how long.

uvicorn closes an idle keep-alive connection, but nothing else: a connection that never sends a
request, or sends its headers a byte at a time, or never reads its response, stays forever, and
1,100 of them exhausted the file limit and locked every client out. Its `limit_concurrency` does not
help: it answers 503 to everyone once the abuser's connections reach the limit. So the server runs
uvicorn's own h11 protocol with these additions (`guarded_protocol`):

- headers: a request's headers must be complete within `client_timeout_s` of the connection opening
  or of the previous response (an absolute deadline: trickling bytes does not extend it);
- slow readers: a response that cannot be written for `client_timeout_s` drops the connection;
- how many: at most `max_connections` at once (lowered to fit the file limit, which is raised to
  its hard limit first), and `max_per_client` per remote address. A new connection over either cap
  closes the oldest connection that is doing nothing (no request, or waiting for its headers), else
  the oldest still uploading its body; only when every connection is busy with a request is the new
  one refused (503). Holding connections open thus gains an abuser nothing, and an editor always gets
  in. Loopback is exempt from the per-address cap: every local client (the editor, a reverse proxy)
  has the same address, so only eviction protects them from one another.

Request bodies (size, upload time) are limited in the ASGI layer (limits.BodyReader), where the
answer can be a 413/408 in the API's shape.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
from typing import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from codegemma.serve.limits import ClientLimits

log = logging.getLogger("codegemma.serve")

_REFUSAL_BODY = (b'{"error": {"code": 503, "message": "the server has too many open connections, all of them busy; '
                 b'retry in a moment", "type": "unavailable_error"}}')
MAX_HEADER_BYTES = 16 * 1024  # a request line and headers; h11's own cap for headers that arrive in pieces
_HEADERS_BODY = b'{"error": "request headers over 16 KiB"}'
HEADERS_TOO_LARGE = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n" % len(_HEADERS_BODY)) + _HEADERS_BODY
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
           b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_REFUSAL_BODY)) + _REFUSAL_BODY


def raise_file_limit(want: int = 1 << 16) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (as Go's runtime does at start-up; the
    usual soft default of 1024 is far below what a server needs); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d (%s)", soft, target, exc)
    return soft


def connection_cap(limits: ClientLimits, soft_limit: int) -> int:
    """Connections the server may hold: the configured cap, lowered so that the files already open,
    the sockets accepted before the guard sees them and some room for the process's own files stay
    under the file limit. (asyncio accepts up to `backlog` sockets per loop turn and a connection's
    protocol runs a turn or two later, so up to three batches can be open beyond the cap.)"""
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 64
    room = soft_limit - open_now - 3 * limits.backlog - 64
    cap = max(16, min(limits.max_connections, room))
    if cap < limits.max_connections:
        log.info("open-file limit %d: at most %d connections at once", soft_limit, cap)
    return cap


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a bind address or a peer's) is this machine only: loopback addresses (IPv4-mapped
    too), `localhost`, or None (a Unix socket). Any other name may resolve to anything: not loopback."""
    if host is None or host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class ConnectionTable:
    """One server's connections in the order they last became idle (oldest first), overall and per
    capped address, so finding whom to close costs no scan of every connection: connections found
    answering a request leave the order until their response is complete."""

    def __init__(self):
        self.order: dict = {}  # connection -> None; a dict keeps insertion order
        self.by_host: dict[str, dict] = {}
        self.count: dict[str, int] = {}  # open connections per capped address

    def add(self, c) -> None:
        self.order[c] = None
        if c._capped:
            self.by_host.setdefault(c._host, {})[c] = None
            self.count[c._host] = self.count.get(c._host, 0) + 1

    def idle_again(self, c) -> None:
        """`c` finished a response: it moves to the end of the order."""
        self.order.pop(c, None)
        self.order[c] = None
        if c._capped:
            mine = self.by_host.setdefault(c._host, {})
            mine.pop(c, None)
            mine[c] = None

    def remove(self, c) -> None:
        self.order.pop(c, None)
        if c._capped and c._host in self.count:
            self.by_host.get(c._host, {}).pop(c, None)
            self.count[c._host] -= 1
            if not self.count[c._host]:
                del self.count[c._host], self.by_host[c._host]

    @staticmethod
    def victim(pool: dict, newcomer):
        """The oldest connection in `pool` doing nothing (no request, or waiting for its headers),
        else the oldest still uploading a request body, else None."""
        uploading, busy, found = None, [], None
        for c in pool:
            if c is newcomer or c.transport.is_closing():
                continue
            state = c._state()
            if state == "idle":
                found = c
                break
            if state == "uploading":
                uploading = uploading or c
            else:
                busy.append(c)
        for c in busy:  # back in the order when their response is complete
            del pool[c]
        return found or uploading


def guarded_protocol(limits: ClientLimits, max_connections: int,
                     on_drop: Callable[[str], None] = lambda reason: None) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the guards above; `on_drop(reason)` is called for every connection
    the guards close (reasons: header_timeout, header_size, write_stall, evicted, refused)."""
    table = ConnectionTable()  # this server's (the class is made per server)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._host = self.client[0] if self.client else None
            self._capped = limits.max_per_client > 0 and not is_loopback(self._host)
            self._deadline = None
            self._stall = None
            table.add(self)
            self._arm_deadline()
            self._make_room()

        def connection_lost(self, exc) -> None:
            for timer in (self._deadline, self._stall):
                if timer is not None:
                    timer.cancel()
            table.remove(self)
            super().connection_lost(exc)

        # ---- headers of at most MAX_HEADER_BYTES ------------------------------------------------------
        def data_received(self, data: bytes) -> None:
            # h11 caps headers only while they are incomplete: 64 KiB arriving in one read would be parsed.
            if self.conn.their_state is h11.IDLE and self._headers_too_large(data):
                on_drop("header_size")
                self.transport.write(HEADERS_TOO_LARGE)
                self.transport.close()
                return
            super().data_received(data)

        def _headers_too_large(self, data: bytes) -> bool:
            pending = self.conn.trailing_data[0]
            if len(pending) + len(data) <= MAX_HEADER_BYTES:
                return False
            head = (bytes(pending) + data)[:MAX_HEADER_BYTES + 4]
            return b"\r\n\r\n" not in head

        # ---- a request's headers within client_timeout_s ---------------------------------------------
        def _arm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(limits.client_timeout_s, self._deadline_passed)

        def _state(self) -> str:
            """idle (no request, or its headers still coming), uploading (a request whose body is still
            arriving) or answering."""
            if self.cycle is None or self.cycle.response_complete:
                return "idle"
            if not self.cycle.response_started and self.conn.their_state is h11.SEND_BODY:
                return "uploading"
            return "answering"

        def _deadline_passed(self) -> None:
            self._deadline = None
            if self._state() == "idle" and not self.transport.is_closing():
                self._drop("header_timeout")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                table.idle_again(self)
                self._arm_deadline()

        # ---- slow readers ----------------------------------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall is None:
                self._stall = self.loop.call_later(limits.client_timeout_s, self._write_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def _write_stalled(self) -> None:
            self._stall = None
            on_drop("write_stall")
            self.transport.abort()  # close() would wait for a buffer that never drains

        # ---- how many --------------------------------------------------------------------------------
        def _make_room(self) -> None:
            if len(self.connections) > max_connections:
                self._evict(table.order)
            if self._capped and not self.transport.is_closing() \
                    and table.count.get(self._host, 0) > limits.max_per_client:
                self._evict(table.by_host[self._host])

        def _evict(self, pool: dict) -> None:
            victim = table.victim(pool, self)
            if victim is not None:
                victim._drop("evicted")
                return
            on_drop("refused")  # every other connection is answering a request
            self.transport.write(REFUSAL)
            self.transport.close()

        def _drop(self, reason: str) -> None:
            log.debug("closing connection from %s: %s", self._host, reason)
            on_drop(reason)
            self.transport.close()

    return GuardedH11Protocol
