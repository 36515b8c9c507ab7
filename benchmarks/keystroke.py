"""Editor keystroke latency against any llama.cpp-compatible server, with a llama.cpp server as the peer.

Requests are the ones llama.vim sends (autoload/llama.vim, s:fim / s:ring_update): POST /infill with
`input_prefix` (up to --n-prefix lines before the cursor line), `input_suffix` (the rest of the line
and --n-suffix lines after), `prompt` (the cursor line up to the cursor), `input_extra` (the ring
buffer of context chunks), `n_indent`, `cache_prompt`, `t_max_predict_ms`, `stream: false`; sampled
requests carry llama.vim's `top_k` 40, `top_p`, `samplers: ["top_k", "top_p", "infill"]`; greedy
ones `temperature: 0` and no sampler list. Ring-buffer updates are llama.vim's warm-up requests
(`n_predict: 0`, empty prefix and suffix, the new `input_extra`). Traces, over a real Python file
(default: torch's nn/modules/module.py), each run greedy and sampled:

  cold    a new file region at every request (nothing cached helps)
  typing  the user types a line of the file, one character per request
  ring    moving around: the ring drops its oldest chunk and gains one from the new region (the
          warm-up request is timed as `ring-warmup`), then the FIM request at the cursor (`ring`)

Every server sees the same requests (seeded). Servers run one at a time. Prints p50/p90/p99 per
trace and the p50 ratio against the peer, writes JSON, and with --record appends the table to
benchmarks/RESULTS.md (figure, device, date).

    # our server from a model directory, llama.cpp started on the GGUF export of the same weights
    python benchmarks/keystroke.py --model DIR --serve-args "--speculate 15 --cache-reuse 256" \\
        --llama-server /path/to/llama-server --gguf model.gguf --record
    # servers already running
    python benchmarks/keystroke.py --url http://127.0.0.1:8080 --peer-url http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRACES = ("cold", "typing", "ring")
RING_CHUNK_LINES = 32  # llama.vim: ring_chunk_size 64, chunks of half that


def default_file() -> Path:
    try:
        import torch

        return Path(torch.__file__).parent / "nn" / "modules" / "module.py"
    except ImportError:
        return max(Path(sys.prefix).rglob("*.py"), key=lambda p: p.stat().st_size)


# ---- requests as llama.vim builds them ---------------------------------------------------------------
def fim_body(lines: list[str], row: int, col: int, extra: list[dict], args, sampled: bool,
             typed: str | None = None) -> dict:
    """llama.vim's s:fim request for the cursor at (row, col); `typed` replaces the cursor line's
    text up to the cursor (the user is typing it)."""
    cur = lines[row] if typed is None else typed
    prefix = "".join(f"{l}\n" for l in lines[max(0, row - args.n_prefix):row])
    suffix = cur[col:] + "\n" + "".join(f"{l}\n" for l in lines[row + 1:row + 1 + args.n_suffix])
    body = {"id_slot": 0, "input_prefix": prefix, "input_suffix": suffix, "input_extra": extra,
            "prompt": cur[:col], "n_predict": args.n_predict, "n_indent": len(cur) - len(cur.lstrip()),
            "stream": False, "cache_prompt": True, "t_max_predict_ms": args.t_max_predict_ms,
            "response_fields": ["content", "timings/prompt_n", "timings/predicted_n", "tokens_cached", "truncated"]}
    if sampled:
        body.update(top_k=40, top_p=args.top_p, samplers=["top_k", "top_p", "infill"])
    else:
        body.update(temperature=0.0)
    return body


def ring_body(extra: list[dict]) -> dict:
    """llama.vim's s:ring_update warm-up: evaluate the new context chunks, generate nothing."""
    return {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "",
            "n_predict": 0, "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True,
            "t_max_predict_ms": 1, "response_fields": [""]}


def chunk(lines: list[str], rng: random.Random, path: str) -> dict:
    i = rng.randrange(max(1, len(lines) - RING_CHUNK_LINES))
    return {"filename": path, "text": "".join(f"{l}\n" for l in lines[i:i + RING_CHUNK_LINES])}


def build_traces(lines: list[str], path: str, args) -> dict[str, list[tuple[str, dict]]]:
    """trace name -> [(label, body)]; label "" = timed as the trace, others as their own row."""
    rng = random.Random(args.seed)
    lo, hi = args.n_prefix, max(args.n_prefix + 1, len(lines) - args.n_suffix - 1)
    code_rows = [r for r in range(lo, hi) if len(lines[r].strip()) > 12]
    traces: dict[str, list[tuple[str, dict]]] = {}
    ring = [chunk(lines, rng, path) for _ in range(args.ring_chunks)]
    for sampled in (False, True):
        kind = "sampled" if sampled else "greedy"
        # cold: a new region each time, far from the previous one
        rows = rng.sample(code_rows, min(args.requests, len(code_rows)))
        traces[f"cold/{kind}"] = [("", fim_body(lines, r, len(lines[r]) // 2, [], args, sampled)) for r in rows]
        # typing: one line typed character by character, after its indentation
        row = rng.choice(code_rows)
        text = lines[row]
        indent = len(text) - len(text.lstrip())
        steps = []
        for k in range(indent + 1, min(len(text), indent + 1 + args.requests) + 1):
            steps.append(("", fim_body(lines, row, k, ring, args, sampled, typed=text[:k])))
        traces[f"typing/{kind}"] = steps
        # ring: drop the oldest chunk, add one from the new region, warm up, then complete there
        steps, cur = [], list(ring)
        for _ in range(args.requests):
            r = rng.choice(code_rows)
            cur = cur[1:] + [chunk(lines, rng, path)]
            steps.append(("ring-warmup", ring_body(cur)))
            steps.append(("", fim_body(lines, r, len(lines[r]), cur, args, sampled)))
        traces[f"ring/{kind}"] = steps
    return traces


# ---- servers ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, timeout_s: float) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not become healthy within {timeout_s:.0f} s; see {log}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_traces(url: str, traces: dict, warmup: int) -> dict:
    """Per trace and label: latencies (ms), prompt/cached/predicted token counts."""
    import httpx

    out: dict = {}
    with httpx.Client(base_url=url, timeout=600) as client:
        first = next(iter(traces.values()))
        for _, body in first[:warmup]:  # untimed: first-request effects are not a keystroke's
            client.post("/infill", json=body).raise_for_status()
        for name, steps in traces.items():
            for label, body in steps:
                key = f"{name}" if not label else f"{label}/{name.split('/')[1]}"
                t0 = time.perf_counter()
                r = client.post("/infill", json=body)
                ms = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                j = r.json()
                row = out.setdefault(key, {"ms": [], "prompt_n": [], "cached": [], "predicted_n": []})
                row["ms"].append(ms)
                row["prompt_n"].append(j.get("timings/prompt_n", 0))
                row["cached"].append(j.get("tokens_cached", 0))
                row["predicted_n"].append(j.get("timings/predicted_n", 0))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(ours: dict, peer: dict | None) -> tuple[str, list[dict]]:
    rows, table = [], ["| trace | n | ours p50 / p90 / p99 ms | peer p50 / p90 / p99 ms | p50 ratio | "
                       "ours prompt / cached / new tokens (median) |", "|---|---:|---|---|---:|---|"]
    for key, o in ours.items():
        p = (peer or {}).get(key)
        ratio = statistics.median(o["ms"]) / statistics.median(p["ms"]) if p else None
        fmt = lambda d: " / ".join(f"{pct(d['ms'], q):.1f}" for q in (0.5, 0.9, 0.99))  # noqa: E731
        rows.append({"trace": key, "n": len(o["ms"]), "ours": {q: pct(o["ms"], v) for q, v in
                                                                (("p50", .5), ("p90", .9), ("p99", .99))},
                     "peer": {q: pct(p["ms"], v) for q, v in (("p50", .5), ("p90", .9), ("p99", .99))} if p else None,
                     "ratio_p50": ratio})
        tokens = " / ".join(str(int(statistics.median(o[k]))) for k in ("prompt_n", "cached", "predicted_n"))
        table.append(f"| {key} | {len(o['ms'])} | {fmt(o)} | {fmt(p) if p else '-'} | "
                     f"{f'{ratio:.2f}' if ratio else '-'} | {tokens} |")
    return "\n".join(table), rows


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{platform.machine()} CPU ({os.cpu_count()} cores)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ours = ap.add_mutually_exclusive_group(required=True)
    ours.add_argument("--url", help="our server, already running")
    ours.add_argument("--model", help="model directory: start `codegemma serve` on it")
    ap.add_argument("--serve-args", default="", help="extra `codegemma serve` arguments (with --model)")
    peer = ap.add_mutually_exclusive_group()
    peer.add_argument("--peer-url", help="a llama.cpp server, already running")
    peer.add_argument("--llama-server", help="llama-server binary to start on --gguf")
    ap.add_argument("--gguf", help="GGUF file for --llama-server (codegemma export --gguf)")
    ap.add_argument("--llama-args", default="-c 8192 -b 8192 -ub 2048 --cache-reuse 256 -fa on -ngl 999 -np 1",
                    help="llama-server arguments besides -m and --port")
    ap.add_argument("--file", default=None, help="the Python file the editor has open (default: torch's module.py)")
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated: " + ", ".join(TRACES))
    ap.add_argument("--requests", type=int, default=30, help="timed requests per trace")
    ap.add_argument("--n-predict", type=int, default=16)
    ap.add_argument("--n-prefix", type=int, default=256, help="lines before the cursor (llama.vim: 256)")
    ap.add_argument("--n-suffix", type=int, default=64, help="lines after the cursor (llama.vim: 64)")
    ap.add_argument("--ring-chunks", type=int, default=16, help="context chunks in the ring (llama.vim: 16)")
    ap.add_argument("--top-p", type=float, default=0.99, help="sampled requests' top_p")
    ap.add_argument("--t-max-predict-ms", type=int, default=0, help="0 = no time limit (comparable token counts)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests before the traces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-timeout", type=float, default=1800, help="seconds to wait for a server to start")
    ap.add_argument("--json", default="keystroke.json", help="write the results here")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.llama_server and not args.gguf:
        ap.error("--llama-server needs --gguf (the same weights, exported with `codegemma export --gguf`)")
    unknown = set(args.traces.split(",")) - set(TRACES)
    if unknown:
        ap.error(f"unknown traces: {', '.join(sorted(unknown))}")

    path = Path(args.file) if args.file else default_file()
    lines = path.read_text(encoding="utf-8").splitlines()
    traces = {k: v for k, v in build_traces(lines, path.name, args).items() if k.split("/")[0] in args.traces.split(",")}
    logs = Path(args.json).with_suffix(".logs")
    logs.mkdir(parents=True, exist_ok=True)

    proc = None
    try:
        url = args.url
        if args.model:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start([sys.executable, "-m", "codegemma", "serve", "--model", args.model, "--port", str(port),
                          *shlex.split(args.serve_args)], url, logs / "codegemma.log", args.startup_timeout)
        print(f"codegemma at {url}: {sum(len(v) for v in traces.values())} requests", file=sys.stderr)
        ours_res = run_traces(url, traces, args.warmup)
    finally:
        stop(proc)
    peer_res, proc = None, None
    try:
        peer_url = args.peer_url
        if args.llama_server:
            port = free_port()
            peer_url = f"http://127.0.0.1:{port}"
            proc = start([args.llama_server, "-m", args.gguf, "--port", str(port), *shlex.split(args.llama_args)],
                         peer_url, logs / "llama-server.log", args.startup_timeout)
        if peer_url:
            print(f"peer at {peer_url}", file=sys.stderr)
            peer_res = run_traces(peer_url, traces, args.warmup)
    finally:
        stop(proc)

    table, rows = summarize(ours_res, peer_res)
    device, date = device_name(), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(table)
    result = {"device": device, "date": date, "file": str(path), "args": vars(args), "rows": rows,
              "ours": ours_res, "peer": peer_res}
    from codegemma.atomic import atomic_write_text

    atomic_write_text(args.json, json.dumps(result, indent=1))
    if args.record:
        from benchmarks.results_md import record

        peer_note = ("llama-server " + args.llama_args if args.llama_server else f"peer {args.peer_url}") \
            if peer_res else "no peer"
        ours_note = f"codegemma serve {args.serve_args}".strip() if args.model else f"server at {args.url}"
        record("Keystroke latency (keystroke.py)",
               f"### {device}, {date}\n\nFile {path.name} ({len(lines)} lines), /infill as llama.vim sends it, "
               f"n_prefix {args.n_prefix} lines, n_suffix {args.n_suffix}, ring of {args.ring_chunks} chunks, "
               f"n_predict {args.n_predict}; {ours_note}; {peer_note}.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
