"""What the hostile tests share: a well-behaved client that must keep being served while an attack
runs (`Bystander`), raw-socket helpers, and reading a Prometheus counter.

The bystander runs in its own process, so the attack's threads (and their GIL) in the test process
do not slow it down: what it measures is the server. It repeats, one after another, GET /health and
a small /infill (an editor's keystroke), and reports every status and latency when stopped.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

# Liveness bounds, not speed claims: a probe must answer well under a second, and an editor's
# 4-token request in a time a person would still wait for (the test machine is small and shared).
HEALTH_DEADLINE_S = 1.0
REQUEST_DEADLINE_S = 10.0

_SCRIPT = r"""
import json, sys, threading, time
import httpx
url, headers = sys.argv[1], json.loads(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 4, "temperature": 0}
records = []
with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
    print("ready", flush=True)
    while not stop.is_set():
        for kind, call in (("health", lambda: c.get("/health")), ("infill", lambda: c.post("/infill", json=body))):
            t = time.perf_counter()
            try:
                status = call().status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            records.append((kind, status, time.perf_counter() - t))
        time.sleep(0.05)
print(json.dumps(records), flush=True)
"""


class Bystander:
    """`with Bystander(url) as b: <attack>`; then `b.check()` asserts it was served normally."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.url = url
        self.headers = headers or {}
        self.records: list[tuple[str, object, float]] = []

    def __enter__(self) -> "Bystander":
        self.proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, self.url, json.dumps(self.headers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc) -> None:
        out, _ = self.proc.communicate(input="", timeout=120)
        self.records = [tuple(r) for r in json.loads(out.strip().splitlines()[-1])]

    def check(self, min_requests: int = 1) -> None:
        bad = [r for r in self.records if r[1] != 200]
        assert not bad, f"the well-behaved client was not served normally: {bad[:5]}"
        infills = [r for r in self.records if r[0] == "infill"]
        assert len(infills) >= min_requests, f"only {len(infills)} requests were served during the attack"
        slowest_health = max(r[2] for r in self.records if r[0] == "health")
        slowest_request = max(r[2] for r in infills)
        assert slowest_health < HEALTH_DEADLINE_S, f"/health took {slowest_health:.2f} s during the attack"
        assert slowest_request < REQUEST_DEADLINE_S, f"a 4-token /infill took {slowest_request:.2f} s"


def counter(url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus counter sample (0 if it has none yet)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}" + (rf"\{{{re.escape(want)}\}}" if want else "") + r" ([0-9.e+]+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def connect(port: int, host: str = "127.0.0.1", source: str | None = None) -> socket.socket:
    s = socket.create_connection((host, port), timeout=30, source_address=(source, 0) if source else None)
    return s


def closed_by_server(s: socket.socket, within_s: float) -> bool:
    """True once the server has closed `s` (EOF or reset) within `within_s` seconds."""
    s.settimeout(within_s)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def read_response(s: socket.socket, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response read from a raw socket (the server closes or sends
    Content-Length)."""
    s.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    while m and len(body) < int(m.group(1)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body
