"""What the HTTP server adds to a FIM completion, against the engine called directly (the peer).

An editor-like trace: a PSM prompt whose prefix grows by one character per "keystroke", 16 new
tokens, greedy. Measured in one run on the same device:
  - direct: `codegemma.load(model).engine.submit(prompt).result()` in this process;
  - /infill (llama.cpp API, keep-alive HTTP client) to a real `codegemma serve` process, whole reply;
  - /infill streamed: time to the first content event (what an editor shows first);
  - /v1/completions with `suffix` (OpenAI API), whole reply.
Prints a table (p50/p90 latency and the ratio to direct) and appends it to benchmarks/RESULTS.md
under "Serving". Without --model it makes a random debug model with `codegemma init`.

    python benchmarks/serve_overhead.py --keystrokes 40
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFIX = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(12)) + "def mean(values):\n    "
SUFFIX = "\n    return total / len(values)\n"
N_NEW = 16


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def make_model(out: Path) -> None:
    """A `codegemma init` debug model whose control tokens have zero embedding rows (tied head:
    logit 0), so greedy runs never stop early and every request generates N_NEW tokens."""
    from safetensors.torch import load_file, save_file

    subprocess.run([sys.executable, "-m", "codegemma", "init", "--preset", "debug", "--out", str(out)],
                   check=True, capture_output=True)
    weights = out / "model.safetensors"
    state = load_file(str(weights))
    state["model.embed_tokens.weight"][:108] = 0.0
    save_file(state, str(weights), metadata={"format": "pt"})


def start_server(model: str, device: str) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "codegemma", "serve", "--model", model, "--port", str(port),
                             "--device", device, "--max-slots", "4", "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("the server exited during startup")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: a fresh `codegemma init` debug model)")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--keystrokes", type=int, default=40)
    args = ap.parse_args()

    import httpx

    import codegemma
    from codegemma.infer.sampling import SamplingParams

    tmp = tempfile.TemporaryDirectory()
    model = args.model or str(Path(tmp.name) / "debug")
    if args.model is None:
        make_model(Path(model))
    prefixes = [PREFIX + "total = sum(values)"[: i % 20] for i in range(args.keystrokes)]

    # The paths are measured round-robin, keystroke by keystroke, so a change in machine load
    # affects them alike (this matters on a shared machine).
    names = ("direct engine", "/infill", "/infill first event", "/v1/completions")
    rows: dict[str, list[float]] = {n: [] for n in names}
    cg = codegemma.load(model, device=args.device)
    params = SamplingParams(max_new_tokens=N_NEW)
    proc, url = start_server(model, args.device)
    generated = []
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            body = {"input_suffix": SUFFIX, "n_predict": N_NEW, "temperature": 0}
            cg.engine.submit(cg.prompts.fim(PREFIX, SUFFIX).ids, params).result()  # warm-up both
            c.post("/infill", json={**body, "input_prefix": PREFIX}).raise_for_status()
            for p in prefixes:
                t0 = time.perf_counter()
                generated.append(cg.engine.submit(cg.prompts.fim(p, SUFFIX).ids, params).result().completion_tokens)
                rows["direct engine"].append((time.perf_counter() - t0) * 1000)

                t0 = time.perf_counter()
                c.post("/infill", json={**body, "input_prefix": p}).raise_for_status()
                rows["/infill"].append((time.perf_counter() - t0) * 1000)

                t0 = time.perf_counter()
                with c.stream("POST", "/infill", json={**body, "input_prefix": p, "stream": True}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: ") and json.loads(line[6:]).get("content"):
                            rows["/infill first event"].append((time.perf_counter() - t0) * 1000)
                            break

                t0 = time.perf_counter()
                c.post("/v1/completions", json={"prompt": p, "suffix": SUFFIX, "max_tokens": N_NEW,
                                                "temperature": 0}).raise_for_status()
                rows["/v1/completions"].append((time.perf_counter() - t0) * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        cg.close()
    print(f"direct engine: {statistics.mean(generated):.1f} tokens generated per request")

    base = statistics.median(rows["direct engine"])
    device = f"{args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    if args.device.startswith("cuda"):
        import torch

        device = torch.cuda.get_device_name()
    lines = [f"FIM latency, {N_NEW} new tokens, {args.keystrokes} keystrokes, model {Path(model).name}, "
             f"device {device}, {datetime.date.today()}",
             "", "| path | p50 ms | p90 ms | p50 / direct |", "|---|---|---|---|"]
    for name, xs in rows.items():
        if xs:
            lines.append(f"| {name} | {statistics.median(xs):.1f} | {percentile(xs, 0.9):.1f} | "
                         f"{statistics.median(xs) / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    from results_md import record
    record("Serving (serve_overhead.py)", table)
    tmp.cleanup()
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
