"""Attacks on the connection level, each against a real `codegemma serve` while a well-behaved editor
(Bystander) keeps asking for completions: it must be served normally throughout.

The server here has the limits of a small host (an open-file limit of 1024, soft and hard) and short
client limits (--client-timeout 3, --max-body-mb 1) so that each attack shows within seconds.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import time

import httpx
import pytest

from tests.serve.conftest import _start
from tests.serve.hostile import Bystander, closed_by_server, connect, counter, read_response

CLIENT_TIMEOUT_S = 3.0
MAX_BODY = 1 << 20
PER_CLIENT = 8


@pytest.fixture(scope="module")
def edge(tmp_path_factory, model_dir):
    # 0.0.0.0: loopback clients (the bystander, most attacks) and one from this host's own
    # non-loopback address, which the per-address cap applies to (no key: the attacks are keyless).
    s = _start(tmp_path_factory, model_dir, "edge", "--host", "0.0.0.0", "--unsafe-no-api-key", "--max-slots", "2",
               "--max-body-mb", str(MAX_BODY / 2**20), "--client-timeout", str(CLIENT_TIMEOUT_S),
               "--max-connections-per-client", str(PER_CLIENT), files_limit=1024)
    yield s
    s.stop()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _dropped(url: str) -> float:
    return sum(counter(url, "codegemma_connections_dropped_total", reason=r) for r in ("evicted", "header_timeout"))


def test_idle_connection_flood_does_not_lock_anyone_out(edge):
    """1,100 connections that never send a byte, against a file limit of 1024: the server closes the
    oldest idle ones to make room (or when their headers are overdue, whichever comes first), so the
    editor and a fresh client still get in and the file limit is never reached."""
    dropped = _dropped(edge.url)
    with Bystander(edge.url) as b:
        flood = [connect(edge.port) for _ in range(1100)]
        fresh = httpx.post(edge.url + "/infill", json={"input_prefix": "x = ", "input_suffix": "", "n_predict": 2},
                           timeout=30)
        assert fresh.status_code == 200
    b.check()
    assert all(closed_by_server(s, CLIENT_TIMEOUT_S + 5) for s in flood)
    for s in flood:
        s.close()
    assert _dropped(edge.url) - dropped >= 1100
    assert "out of system resource" not in edge.log()  # asyncio's EMFILE on accept
    edge.assert_alive()


def test_slowloris_headers_are_cut_off(edge):
    with Bystander(edge.url) as b:
        idle = [connect(edge.port) for _ in range(10)]
        slow = [connect(edge.port) for _ in range(10)]
        for s in slow:
            s.sendall(b"POST /infill HTTP/1.1\r\nHost: x\r\n")
        started, closed = time.monotonic(), set()
        while len(closed) < len(slow) and time.monotonic() - started < CLIENT_TIMEOUT_S + 10:
            for i, s in enumerate(slow):
                if i in closed:
                    continue
                try:
                    s.send(b"X")  # one header byte at a time, forever
                except OSError:
                    closed.add(i)
                    continue
                if closed_by_server(s, 0.01):
                    closed.add(i)
            time.sleep(0.3)
        took = time.monotonic() - started
    b.check()
    assert len(closed) == len(slow), "a client trickling header bytes kept its connection"
    assert took < CLIENT_TIMEOUT_S + 5
    assert all(closed_by_server(s, 1) for s in idle)
    for s in idle + slow:
        s.close()


def test_oversized_headers_are_refused(edge):
    s = connect(edge.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (64 << 10) + b"\r\n\r\n")
    status, _ = read_response(s)
    assert status == 400 and closed_by_server(s, 5)
    s.close()


def _trickle_until_answer(s: socket.socket, limit_s: float) -> tuple[int | None, bytes, float]:
    """Send one body byte every 0.3 s until the server answers: (status, body, seconds taken)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if select.select([s], [], [], 0.3)[0]:
            status, body = read_response(s)
            return status, body, time.monotonic() - started
        s.send(b" ")
    return None, b"", time.monotonic() - started


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_slow_body_gets_408(edge, framing):
    with Bystander(edge.url) as b:
        s = connect(edge.port)
        length = b"Content-Length: 1000\r\n" if framing == "content-length" else b"Transfer-Encoding: chunked\r\n"
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + length + b"\r\n")
        if framing == "chunked":
            s.sendall(b"400\r\n{")  # a chunk of 1024 bytes, trickled below
        status, body, took = _trickle_until_answer(s, CLIENT_TIMEOUT_S + 10)
        s.close()
    b.check()
    assert status == 408 and b"arrived too slowly" in body, body[:200]
    assert took < CLIENT_TIMEOUT_S + 5


@pytest.mark.parametrize("path", ["/api/show", "/v1/completions", "/health"])
def test_declared_oversize_body_is_refused_before_it_is_sent(edge, path):
    s = connect(edge.port)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {50 << 20}\r\n\r\n".encode())
    status, body = read_response(s, timeout_s=30)  # not a byte of the body was sent
    s.close()
    assert status == 413 and f"limit of {MAX_BODY} bytes".encode() in body


@pytest.mark.parametrize("path", ["/api/show", "/v1/completions", "/infill"])
def test_chunked_oversize_body_gets_413_as_soon_as_the_limit_is_passed(edge, path):
    """50 MB sent chunked (no declared length): 413 arrives while the client is still sending, after
    little more than the limit, and the server's memory does not grow with what was sent."""
    rss = _rss_mib(edge.proc.pid)
    chunk = b"10000\r\n" + b"[1," * (0x10000 // 3) + b"1" * (0x10000 % 3) + b"\r\n"  # 64 KiB chunks
    with Bystander(edge.url) as b:
        s = connect(edge.port)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        sent = 0
        while sent < 50 << 20 and not select.select([s], [], [], 0)[0]:
            s.sendall(chunk)
            sent += len(chunk)
        status, body = read_response(s)
        s.close()
    b.check()
    assert status == 413 and b"larger than the limit" in body
    assert sent < MAX_BODY + (8 << 20), f"sent {sent} bytes before the server answered"
    assert _rss_mib(edge.proc.pid) - rss < 64


def test_client_that_reads_nothing_of_a_large_response_is_dropped(edge):
    """A response far larger than the socket buffers (pieces of 128 Ki byte tokens, some megabytes) to a
    client that never reads: the server drops it once its writes stall for the client timeout."""
    stalled = counter(edge.url, "codegemma_connections_dropped_total", reason="write_stall")
    with Bystander(edge.url) as b:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        s.connect(("127.0.0.1", edge.port))
        body = json.dumps({"content": "\u00e9" * 65536, "with_pieces": True}).encode()
        s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 60
        while counter(edge.url, "codegemma_connections_dropped_total", reason="write_stall") == stalled:
            assert time.monotonic() < deadline, "the server kept a connection whose client reads nothing"
            time.sleep(0.5)
        s.close()
    b.check()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = u.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_one_remote_address_holds_at_most_its_share(edge):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    evicted = counter(edge.url, "codegemma_connections_dropped_total", reason="evicted")
    with Bystander(edge.url) as b:
        remote = [connect(edge.port, host=address, source=address) for _ in range(3 * PER_CLIENT)]
        time.sleep(0.5)
        still_open = [s for s in remote if not closed_by_server(s, 0.01)]
        # the remote client itself still gets answers (its newest connection is never the one closed)
        with httpx.Client(base_url=f"http://{address}:{edge.port}", timeout=30) as c:
            assert c.get("/health").status_code == 200
    b.check()
    assert len(still_open) <= PER_CLIENT
    assert counter(edge.url, "codegemma_connections_dropped_total", reason="evicted") - evicted >= 2 * PER_CLIENT
    for s in remote:
        s.close()


def test_sigterm_during_a_slow_upload_stops_the_server(edge):
    """Last in this file: it stops the module's server."""
    s = connect(edge.port)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
    time.sleep(0.5)
    edge.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    for _ in range(20):
        try:
            s.send(b"1\r\n \r\n")
        except OSError:
            break
        time.sleep(0.3)
    code = edge.proc.wait(timeout=30)
    s.close()
    assert time.monotonic() - started < 20
    # a graceful shutdown (uvicorn re-raises the signal once it is done: -15 is how it exits)
    assert code in (0, -signal.SIGTERM) and "Finished server process" in edge.log()


def test_one_loopback_rule_for_bind_addresses_and_peers():
    """`serve --host` and the per-client cap share one rule: names other than localhost may resolve
    anywhere, IPv4-mapped loopback is loopback, a Unix socket (no address) is local."""
    from codegemma.serve.connections import is_loopback

    assert all(map(is_loopback, [None, "127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "localhost.evil"]))
